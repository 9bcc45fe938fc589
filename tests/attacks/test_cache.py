import io
import multiprocessing
import time

import pytest
import torch
import zstandard

from attacks import AdversarialSetCache, batch_seed, control_noise, craft
from attacks.cache import HEADER_BYTES, LENGTH_BYTES, PREFIX_BYTES, SUFFIX, SetError


def slow_craft(root: str, key: str, log: str) -> None:
    """A process that asks the cache for a set; crafting takes a while and is logged."""
    clean = torch.full((2, 1, 4, 4), 0.5)

    def fill(write):
        with open(log, "a") as file:
            file.write("crafted\n")
        time.sleep(0.5)
        write(clean, torch.full((2, 1, 4, 4), 0.25))

    cache = AdversarialSetCache(root)
    cache.ensure(key, 0, fill)
    adversarial, _ = cache.load(key, [clean])
    assert float(adversarial.sum()) == 8.0


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
    assert stored == [f"set1{SUFFIX}"]


def bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view(torch.int32)


def crafted_sets(generator: torch.Generator, tiny_net) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(clean, adversarial) batches of real attacks on 8-bit and on continuous clean images, and
    arbitrary floats (negative zero, values outside [0, 1]) against arbitrary clean values."""
    model = tiny_net(3, 1)
    grid = torch.round(torch.rand(4, 3, 9, 7, generator=generator) * 255) / 255
    smooth = torch.rand(4, 3, 9, 7, generator=generator)
    labels = torch.randint(0, 2, (4,), generator=generator)
    sets = {}
    for name, setting in {"fgsm": {"name": "fgsm", "eps": 2 / 255},
                          "ifgsm": {"name": "ifgsm", "eps": 4 / 255, "alpha": 1 / 255, "steps": 5},
                          "fgsm-8bit": {"name": "fgsm", "eps": 2 / 255, "quantize": True}}.items():
        for kind, clean in (("grid", grid), ("smooth", smooth)):
            sets[f"{name}-{kind}"] = clean, craft(model, clean, labels, setting, "binary")
    odd = torch.randn(4, 3, 9, 7, generator=generator) * 3
    odd[0, 0, 0, :3] = torch.tensor([-0.0, float("inf"), 1e-40])
    sets["arbitrary"] = torch.rand(4, 3, 9, 7, generator=generator), odd
    return sets


def test_sets_are_stored_bit_for_bit_with_control_noise_drawn_from_the_batch_seed(tmp_path, tiny_net):
    generator = torch.Generator().manual_seed(0)
    for name, (clean, adversarial) in crafted_sets(generator, tiny_net).items():
        batches = [(clean[:3], adversarial[:3]), (clean[3:], adversarial[3:])]
        cache = AdversarialSetCache(tmp_path)
        cache.ensure(name, 11, lambda write: [write(*batch) for batch in batches])
        for got in (cache.load(name, [c for c, _ in batches]),
                    AdversarialSetCache(tmp_path).load(name, [c for c, _ in batches])):
            assert got[0].dtype == torch.float32 and torch.equal(bits(got[0]), bits(adversarial)), name
            # the control noise a crafting batch would have drawn: its perturbation, shuffled by its seed
            control = torch.cat([control_noise(c, a, torch.Generator().manual_seed(batch_seed(11, i)))
                                 for i, (c, a) in enumerate(batches)])
            assert torch.equal(bits(got[1]), bits(control)), name
        offsets = cache.offsets(name)
        second = cache.chunk(name, offsets[1], clean[3:], 1)
        assert torch.equal(bits(second[0]), bits(adversarial[3:]))


# Bytes a value of the stored file, measured on this test's images and network (seeded): `steps` code
# for FGSM, 10-step iterative FGSM and PGD, `grid8` for quantised FGSM (8-bit values k as they are).
MEASURED_BYTES_A_VALUE = {"fgsm": 0.712, "ifgsm": 0.712, "pgd": 0.712, "quantised": 1.045}


def stored_record(path) -> dict:
    """The first record of a set file, read by hand from its documented layout."""
    data = path.read_bytes()
    length = int.from_bytes(data[HEADER_BYTES:HEADER_BYTES + LENGTH_BYTES], "little")
    start = HEADER_BYTES + PREFIX_BYTES
    return torch.load(io.BytesIO(data[start:start + length]), weights_only=True)


def test_a_set_takes_the_measured_bytes_a_value_compressed(tmp_path, tiny_net):
    torch.manual_seed(1)  # the network and PGD's random start
    generator = torch.Generator().manual_seed(1)
    model, labels = tiny_net(3, 1), torch.randint(0, 2, (16,), generator=generator)
    clean = torch.round(torch.rand(16, 3, 32, 32, generator=generator) * 255) / 255  # 8-bit images
    cache = AdversarialSetCache(tmp_path)
    for name, setting in {"fgsm": {"name": "fgsm", "eps": 2 / 255},
                          "ifgsm": {"name": "ifgsm", "eps": 2 / 255, "alpha": 0.5 / 255, "steps": 10},
                          "pgd": {"name": "pgd", "eps": 2 / 255, "alpha": 0.5 / 255, "steps": 10},
                          "quantised": {"name": "fgsm", "eps": 2 / 255, "quantize": True}}.items():
        adversarial = craft(model, clean, labels, setting, "binary")
        cache.ensure(name, 0, lambda write: write(clean, adversarial))
        per_value = cache.path(name).stat().st_size / clean.numel()
        assert 0.8 <= per_value / MEASURED_BYTES_A_VALUE[name] <= 1.2, (name, per_value)
        record = stored_record(cache.path(name))
        packed = record["packed"].numpy().tobytes()
        raw = clean.numel() * (1 if name == "quantised" else 4)  # uint8 k, or uint32 bit differences
        assert record["code"] == ("grid8" if name == "quantised" else "steps")
        assert packed[:4] == b"\x28\xb5\x2f\xfd" and zstandard.frame_content_size(packed) == raw, name
        if name != "quantised":  # uniform 8-bit values do not compress; bit differences do
            assert len(packed) < raw / 4, name


def test_a_set_is_never_read_against_other_clean_images(tmp_path):
    clean = torch.rand(2, 1, 4, 4)
    cache = AdversarialSetCache(tmp_path)
    cache.ensure("k", 0, lambda write: write(clean, (clean + 0.01).clamp(0, 1)))
    other = clean.clone()
    other[0, 0, 0, 0] += 1e-7
    with pytest.raises(ValueError, match=r"k\.set: batch 0 was crafted on other clean images"):
        cache.load("k", [other])
    with pytest.raises(ValueError, match="1 batches stored, more clean batches given"):
        cache.load("k", [clean, clean])
    with pytest.raises(ValueError, match="more batches stored than clean batches given"):
        cache.load("k", [])


def test_files_of_another_format_are_refused_and_older_sets_crafted_again(tmp_path, capsys):
    old = tmp_path / "k.pt"  # the float32 format of before, under its own name: never read
    old.write_bytes(b"an older set")
    cache = AdversarialSetCache(tmp_path)
    assert "k" not in cache
    cache.path("k").write_bytes(b"MEDTRANSFER-SET\n" + (9).to_bytes(2, "little") + bytes(8))
    with pytest.raises(SetError, match=r"k\.set: adversarial-set format 9, this version reads 3$"):
        cache.offsets("k")
    # format 2 (no checksums) under the same name: not in the cache, crafted again with one warning line
    clean, adversarial = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    cache.path("k").write_bytes(b"MEDTRANSFER-SET\n" + (2).to_bytes(2, "little") + bytes(8))
    assert "k" not in cache
    capsys.readouterr()
    cache.ensure("k", 0, lambda write: write(clean, adversarial))
    assert capsys.readouterr().err.splitlines() == [
        f"medtransfer: warning: {cache.path('k')}: adversarial-set format 2, this version reads 3; "
        "crafting the set again"]
    assert "k" in cache and torch.equal(cache.load("k", [clean])[0], adversarial)


def test_a_damaged_set_is_not_in_the_cache_and_crafted_again_once(tmp_path, capsys):
    clean = torch.rand(3, 1, 5, 5)
    cache = AdversarialSetCache(tmp_path)
    cache.ensure("k", 0, lambda write: [write(clean[:2], clean[:2] / 2), write(clean[2:], clean[2:] / 2)])
    intact = cache.path("k").read_bytes()
    damaged = bytearray(intact)
    damaged[-30] ^= 0x10  # in the last record
    cache.path("k").write_bytes(bytes(damaged))
    assert "k" not in cache
    with pytest.raises(SetError, match=r"k\.set: batch 1: record damaged \(checksum mismatch\)$"):
        cache.load("k", [clean[:2], clean[2:]])
    capsys.readouterr()
    crafted = []
    for _ in range(2):
        cache.ensure("k", 0, lambda write: crafted.append(write(clean, clean / 2)))
    assert len(crafted) == 1 and "k" in cache
    assert capsys.readouterr().err.splitlines() == [
        f"medtransfer: warning: {cache.path('k')}: batch 1: record damaged (checksum mismatch); "
        "crafting the set again"]
    assert torch.equal(cache.load("k", [clean])[0], clean / 2)


def test_a_failed_craft_leaves_nothing_behind(tmp_path):
    def failing(write):
        write(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
        raise RuntimeError("out of memory")

    cache = AdversarialSetCache(tmp_path)
    with pytest.raises(RuntimeError):
        cache.ensure("k", 0, failing)
    assert "k" not in cache
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []
    with pytest.raises(FileNotFoundError, match="no set"):
        cache.load("k", [])


def test_keys_must_be_plain_names(tmp_path):
    with pytest.raises(ValueError, match="key '../x' must be"):
        AdversarialSetCache(tmp_path).load("../x", [])


def test_a_killed_writers_temporary_file_is_removed_when_the_set_is_crafted(tmp_path):
    cache = AdversarialSetCache(tmp_path)
    stale, other = tmp_path / "k.abc123.tmp", tmp_path / "k2.abc123.tmp"
    stale.write_bytes(b"half a set")
    other.write_bytes(b"another key's writer")
    clean, adversarial = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    cache.ensure("k", 0, lambda write: write(clean, adversarial))
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.glob("*.tmp")) == ["k2.abc123.tmp"]
    assert torch.equal(cache.load("k", [clean])[0], adversarial)
