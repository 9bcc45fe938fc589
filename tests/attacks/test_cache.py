import multiprocessing
import time

import pytest
import torch

from attacks import AdversarialSetCache


def slow_craft(root: str, key: str, log: str) -> None:
    """A process that asks the cache for a set; crafting takes a while and is logged."""

    def craft_fn():
        with open(log, "a") as file:
            file.write("crafted\n")
        time.sleep(0.5)
        return torch.full((2, 1, 4, 4), 0.25), torch.full((2, 1, 4, 4), 0.75)

    adversarial, control = AdversarialSetCache(root).load_or_craft(key, craft_fn)
    assert float(adversarial.sum()) == 8.0 and float(control.sum()) == 24.0


def test_two_processes_never_craft_the_same_set_twice(tmp_path):
    log = tmp_path / "log.txt"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=slow_craft, args=(str(tmp_path / "cache"), "set1", str(log)))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert log.read_text() == "crafted\n"
    stored = sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock"))
    assert stored == ["set1.pt"]


def test_sets_are_stored_losslessly_and_reused(tmp_path):
    generator = torch.Generator().manual_seed(0)
    adversarial = torch.rand(3, 3, 5, 7, generator=generator)
    control = torch.rand(3, 3, 5, 7, generator=generator)
    calls = []

    def craft_fn():
        calls.append(1)
        return adversarial, control

    first = AdversarialSetCache(tmp_path).load_or_craft("abc", craft_fn)
    second = AdversarialSetCache(tmp_path).load_or_craft("abc", craft_fn)
    assert len(calls) == 1
    for got in (first, second):
        assert torch.equal(got[0], adversarial) and torch.equal(got[1], control)
        assert got[0].dtype == torch.float32


def test_a_failed_craft_leaves_nothing_behind(tmp_path):
    def failing():
        raise RuntimeError("out of memory")

    cache = AdversarialSetCache(tmp_path)
    with pytest.raises(RuntimeError):
        cache.load_or_craft("k", failing)
    assert "k" not in cache
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    with pytest.raises(FileNotFoundError, match="no set"):
        cache.load("k")


def test_keys_must_be_plain_names(tmp_path):
    with pytest.raises(ValueError, match="key '../x' must be"):
        AdversarialSetCache(tmp_path).load("../x")


def test_a_killed_writers_temporary_file_is_removed_when_the_set_is_crafted(tmp_path):
    cache = AdversarialSetCache(tmp_path)
    stale, other = tmp_path / "k.abc123.tmp", tmp_path / "k2.abc123.tmp"
    stale.write_bytes(b"half a set")
    other.write_bytes(b"another key's writer")
    chunk = (torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))
    cache.ensure("k", lambda write: write(*chunk))
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.glob("*.tmp")) == ["k2.abc123.tmp"]
    torch.testing.assert_close(cache.load("k"), chunk, rtol=0, atol=0)
