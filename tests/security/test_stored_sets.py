"""Stored adversarial sets and generated-data cache entries that rot or are crafted: read back exactly
when intact, else one `SetError` line naming the file (the set then crafted again), never another
exception and never more memory than the record must hold."""
import hashlib
import io
import tracemalloc
import zlib
from functools import lru_cache

import numpy as np
import pytest
import torch
import zstandard
from hypothesis import example, given
from hypothesis import strategies as st

from attacks import AdversarialSetCache
from attacks.cache import HEADER_BYTES, MAGIC, VERSION, SetError

MEMORY_BUDGET = 8 << 20  # bytes Python may hold at once while reading a set of 32 values
SHAPE = (2, 1, 4, 4)
CLEAN = torch.rand(SHAPE, generator=torch.Generator().manual_seed(0))
GRID = np.arange(32, dtype=np.uint8) * 7  # a grid8 payload: k for k / 255
STEPS = np.arange(32, dtype=np.uint32) * 1000  # a steps payload: float32 bit differences


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def set_file(records: list[bytes], seed: int = 3) -> bytes:
    """A set file as its documented layout says: header and its checksum, then length, checksum, bytes."""
    header = MAGIC + VERSION.to_bytes(2, "little") + seed.to_bytes(8, "little", signed=True)
    return header + digest(header) + b"".join(len(r).to_bytes(8, "little") + digest(r) + r for r in records)


def saved(record) -> bytes:
    buffer = io.BytesIO()
    torch.save(record, buffer)
    return buffer.getvalue()


def as_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("stored-sets")


@pytest.fixture(scope="module")
def intact(root) -> tuple[bytes, list[torch.Tensor], torch.Tensor]:
    """A valid two-batch file (a `steps` and a `grid8` batch), its clean batches and its adversarial images."""
    cache = AdversarialSetCache(root / "intact")
    adversarial = torch.cat([(CLEAN + 0.01).clamp(0, 1), torch.round(CLEAN * 255) / 255])
    clean = [CLEAN, CLEAN]
    cache.ensure("k", 3, lambda write: [write(c, a) for c, a in zip(clean, adversarial.split(2))])
    return cache.path("k").read_bytes(), clean, adversarial


def read_back(root, data: bytes, clean: list[torch.Tensor]):
    """What the cache makes of a file holding `data`: the set (adversarial, control) or the SetError,
    after checking that the error is one line naming the file, `damage` agrees, `offsets` and `chunk`
    agree, and Python never held more than MEMORY_BUDGET."""
    cache = AdversarialSetCache(root)
    cache.path("k").write_bytes(data)
    tracemalloc.start()
    try:
        try:
            got = cache.load("k", clean)
        except SetError as err:
            got = err
        try:
            pieces = [cache.chunk("k", offset, clean[i], i) for i, offset in enumerate(cache.offsets("k"))]
        except SetError as err:
            pieces = err
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BUDGET, peak
    for outcome in (got, pieces):
        if isinstance(outcome, SetError):
            line = str(outcome)
            assert "\n" not in line and line.startswith(f"{cache.path('k')}: "), line
    if not isinstance(got, SetError):
        assert cache.damage("k") is None and "k" in cache
        assert not isinstance(pieces, SetError) and len(pieces) == len(clean)
        assert all(torch.equal(a, b) for a, b in zip(torch.cat([p[0] for p in pieces]), got[0]))
    return got


def bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view(torch.int32)


def test_an_intact_file_reads_back_bit_for_bit(root, intact):
    data, clean, adversarial = intact
    got = read_back(root, data, clean)
    assert torch.equal(bits(got[0]), bits(adversarial))


@given(st.one_of(st.binary(max_size=400), st.binary(max_size=400).map(lambda b: set_file([]) + b),
                 st.binary(max_size=400).map(lambda b: set_file([b]))))
def test_arbitrary_bytes_are_one_line(root, intact, data):
    assert isinstance(read_back(root, data, intact[1]), SetError)


@given(st.data())
def test_every_truncation_is_one_line(root, intact, draw):
    data, clean, _ = intact
    assert isinstance(read_back(root, data[:draw.draw(st.integers(0, len(data) - 1))], clean), SetError)


@given(st.data())
def test_every_bit_flip_anywhere_is_detected(root, intact, draw):
    data, clean, _ = intact
    flips = draw.draw(st.lists(st.integers(0, 8 * len(data) - 1), min_size=1, max_size=3, unique=True))
    damaged = bytearray(data)
    for bit in flips:
        damaged[bit // 8] ^= 1 << bit % 8
    assert isinstance(read_back(root, bytes(damaged), clean), SetError)
    cache = AdversarialSetCache(root)
    assert "k" not in cache and cache.damage("k").startswith(f"{cache.path('k')}: ")


@given(st.integers(0, 2 ** 64 - 1))
def test_a_declared_record_length_other_than_the_records_is_one_line(root, length):
    record = saved({"shape": torch.tensor(SHAPE), "clean_crc": torch.tensor(zlib.crc32(CLEAN.numpy().data)),
                    "code": "grid8", "packed": as_tensor(zstandard.ZstdCompressor().compress(GRID.data))})
    data = bytearray(set_file([record]))
    data[HEADER_BYTES:HEADER_BYTES + 8] = length.to_bytes(8, "little")
    got = read_back(root, bytes(data), [CLEAN])
    assert isinstance(got, SetError) == (length != len(record))


@lru_cache(maxsize=1)
def packed_variants() -> dict[str, torch.Tensor]:
    """Stored payloads, good and hostile: a frame declaring 256 MiB (8 KiB stored), one of 64 MiB that
    declares no size, cut frames, other bytes, wrong dtypes and dimensions."""
    compress = zstandard.ZstdCompressor(level=1)
    return {"grid": as_tensor(compress.compress(GRID.data)), "steps": as_tensor(compress.compress(STEPS.data)),
            "bomb": as_tensor(compress.compress(bytes(256 << 20))),
            "unsized bomb": as_tensor(zstandard.ZstdCompressor(write_content_size=False).compress(bytes(64 << 20))),
            "short": as_tensor(compress.compress(GRID[:-1].data)),
            "cut": as_tensor(compress.compress(STEPS.data)[:-3]), "noise": as_tensor(bytes(range(200))),
            "empty": torch.zeros(0, dtype=torch.uint8), "float": torch.zeros(40),
            "2-d": as_tensor(compress.compress(GRID.data)).view(1, -1)}


CRC = zlib.crc32(CLEAN.numpy().data)
RECORDS = st.fixed_dictionaries({
    "shape": st.sampled_from(["clean", [2 ** 40], [-2, -1, 4, 4], [2, 1, 4, 4, 1], [32], "float", "text"]),
    "clean_crc": st.sampled_from(["clean", CRC ^ 1, "vector", "python int"]),
    "code": st.sampled_from(["grid8", "steps", "zlib", 1, None]),
    "packed": st.sampled_from(["grid", "steps", "bomb", "unsized bomb", "short", "cut", "noise", "empty", "float",
                               "2-d"]),
})


def built(choice: dict) -> dict:
    shapes = {"clean": torch.tensor(SHAPE), "float": torch.tensor(SHAPE).float(), "text": "2,1,4,4"}
    crcs = {"clean": torch.tensor(CRC), "vector": torch.tensor([CRC]), "python int": CRC}
    shape, crc = choice["shape"], choice["clean_crc"]
    return {"shape": shapes[shape] if isinstance(shape, str) else torch.tensor(shape),
            "clean_crc": crcs[crc] if isinstance(crc, str) else torch.tensor(crc),
            "code": choice["code"], "packed": packed_variants()[choice["packed"]]}


def expected(choice: dict) -> torch.Tensor | None:
    """The adversarial images a record must decode to, computed here from its payload; None when the
    record is not a valid one."""
    valid = choice["shape"] == "clean" and choice["clean_crc"] == "clean"
    if valid and (choice["code"], choice["packed"]) == ("grid8", "grid"):
        return torch.from_numpy(GRID.astype(np.float32)).view(SHAPE) / 255.0
    if valid and (choice["code"], choice["packed"]) == ("steps", "steps"):
        return torch.from_numpy((CLEAN.numpy().view(np.uint32).reshape(-1) + STEPS).view(np.float32)).view(SHAPE)
    return None


@given(RECORDS, st.sets(st.sampled_from(["shape", "clean_crc", "code", "packed"]), max_size=2), st.booleans())
@example({"shape": "clean", "clean_crc": "clean", "code": "grid8", "packed": "grid"}, set(), False)
@example({"shape": "clean", "clean_crc": "clean", "code": "steps", "packed": "steps"}, set(), False)
@example({"shape": "clean", "clean_crc": "clean", "code": "steps", "packed": "unsized bomb"}, set(), False)
@example({"shape": [2 ** 40], "clean_crc": "clean", "code": "steps", "packed": "bomb"}, set(), False)
def test_crafted_records_with_right_checksums_decode_exactly_or_are_one_line(root, choice, dropped, extra):
    record = {k: v for k, v in built(choice).items() if k not in dropped}
    if extra:
        record["adversarial"] = torch.zeros(SHAPE)
    got = read_back(root, set_file([saved(record)]), [CLEAN])
    want = None if dropped or extra else expected(choice)
    if want is None:
        assert isinstance(got, SetError)
    else:
        assert not isinstance(got, SetError), got
        assert torch.equal(bits(got[0]), bits(want))


def test_a_payload_bomb_is_refused_before_it_is_decompressed(root):
    record = {"shape": torch.tensor(SHAPE), "clean_crc": torch.tensor(CRC), "code": "steps",
              "packed": packed_variants()["bomb"]}
    with pytest.raises(SetError, match=r"k\.set: batch 0: record declares 268435456 bytes of steps code, 128 "
                                       r"expected$"):
        cache = AdversarialSetCache(root)
        cache.path("k").write_bytes(set_file([saved(record)]))
        cache.load("k", [CLEAN])


def pair_results(uri: str) -> dict[str, dict]:
    """Each pair run's result metrics (timings aside), by pair identity."""
    from mlflow.tracking import MlflowClient
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.kind = 'pair'")
    return {run.data.tags["config_hash"]: {k: v for k, v in run.data.metrics.items() if not k.endswith("_seconds")}
            for run in runs}


@pytest.mark.slow  # two smoke studies
def test_a_damaged_set_and_data_cache_entry_are_made_again_through_the_cli(tmp_path, capfd):
    from experiments.cli import main
    from experiments.design.config import preset_path

    out, data = tmp_path / "out", tmp_path / "data"
    args = ["run", "--config", str(preset_path("smoke")), f"output_dir={out}", f"data.cache_dir={data}",
            "train.max_epochs=1", "bootstrap_resamples=0", "attacks=[{name: fgsm, eps: [0.02]}]"]
    first = f"sqlite:///{tmp_path / 'first.db'}"
    assert main([*args, f"tracking.uri={first}"]) == 0
    sets = sorted((out / "adversarial_sets").glob("*.set"))
    entry, = data.glob("*.images")
    stored = {path: path.read_bytes() for path in [*sets, entry]}
    for path, content in stored.items():  # one bit flipped in the middle of each file
        damaged = bytearray(content)
        damaged[len(damaged) // 2] ^= 0x04
        path.write_bytes(bytes(damaged))
    capfd.readouterr()
    second = f"sqlite:///{tmp_path / 'second.db'}"  # a new store: models trained and pairs evaluated anew
    assert main([*args, f"tracking.uri={second}"]) == 0
    err = capfd.readouterr().err
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if line.startswith("medtransfer: warning:")]
    assert len(warnings) == err.count("medtransfer: warning:")  # each on its own line, progress bars aside
    assert sorted(warnings) == sorted([
        f"medtransfer: warning: {entry.with_suffix('.pt')}: cache entry damaged (checksum mismatch); "
        "generating the data again",
        *[f"medtransfer: warning: {path}: batch {batch}: record damaged (checksum mismatch); crafting the set again"
          for path, batch in zip(sets, damaged_batches(sets, stored))]])
    assert {path: path.read_bytes() for path in stored} == stored  # made again, exactly as before
    results = pair_results(first)
    assert len(results) == 4
    np.testing.assert_equal(pair_results(second), results)  # every number the same (NaN as NaN)


def damaged_batches(sets, stored) -> list[int]:
    """The batch whose record holds the middle byte of each set file (read from its record lengths)."""
    batches = []
    for path in sets:
        content, offset, batch = stored[path], HEADER_BYTES, 0
        while True:
            end = offset + 24 + int.from_bytes(content[offset:offset + 8], "little")
            if end > len(content) // 2:
                break
            offset, batch = end, batch + 1
        batches.append(batch)
    return batches


def generate(n, empty=torch.empty):
    """A tiny generator: image i is all i, label i % 2, patient i // 2."""
    images = empty(n, 1, 2, 2, dtype=torch.uint8)
    images[0:n] = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2)
    return images, torch.arange(n) % 2, torch.arange(n) // 2


@pytest.mark.parametrize("damage", ["label flipped", "images changed", "older format", "shape changed"])
def test_a_damaged_data_cache_entry_is_generated_again_never_read(tmp_path, capsys, damage):
    from datamodules.synthetic.cache import cached_generate

    params = {"domain": "pathology", "n": 6}
    cached_generate(generate, params, tmp_path)
    record, = tmp_path.glob("pathology-*.pt")
    saved_record = torch.load(record, weights_only=True)
    if damage == "label flipped":  # the record's checksum kept, a label changed
        saved_record["labels"][3] ^= 1
    elif damage == "older format":
        saved_record = {k: saved_record[k] for k in ("labels", "patients", "shape")}
    elif damage == "shape changed":  # six 2 x 2 images read as three 2 x 4 ones
        saved_record["shape"] = torch.tensor([3, 1, 2, 4])
    else:
        images = record.with_suffix(".images")
        images.write_bytes(bytes([9]) * images.stat().st_size)
    torch.save(saved_record, record)
    capsys.readouterr()
    images, labels, patients = cached_generate(generate, params, tmp_path)
    reasons = {"older format": "cache entry of another format, this version reads 2"}
    assert capsys.readouterr().err.splitlines() == [
        f"medtransfer: warning: {record}: {reasons.get(damage, 'cache entry damaged (checksum mismatch)')}; "
        "generating the data again"]
    expected = generate(6)
    assert torch.equal(images.read(0, 6), expected[0]) and torch.equal(labels, expected[1])
    assert torch.equal(patients, expected[2])
    capsys.readouterr()
    cached_generate(generate, params, tmp_path)  # now intact: read back without a word
    assert capsys.readouterr().err == ""
