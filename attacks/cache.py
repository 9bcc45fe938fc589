"""On-disk cache of adversarial sets, one file per key (the caller's identity of the set), written once.

A set is stored as what its adversarial images add to the clean ones, losslessly and compactly, and
read back against the same clean images; the control noise is never stored: it is drawn again on
reading from the perturbation and the set's per-batch seed (`batch_seed`), exactly as crafting
would draw it. A file (`<key>.set`, format 3) starts with a header (`MAGIC`, the format `VERSION`,
the set's seed, a blake2b-128 checksum of those), then one record per crafting batch: its byte
length, a blake2b-128 checksum of its bytes, and the bytes, a weights-only `torch.save` of tensors in
one of two exact codes, Zstandard compressed (level 1: a third of zlib's time at a smaller size):

- `grid8`: when the adversarial images are on the 8-bit grid k / 255 (quantised attacks): k as
  uint8, at most 1 byte a value;
- `steps` otherwise: the difference of the float32 bit patterns of the adversarial and the clean
  value, a uint32 (exact for any two floats). FGSM and iterative FGSM move a value by a few
  multiples of a step size, which in float32 is one of a few bit differences per power of two of
  the value, so the differences compress to under a byte a value (8 bytes before: adversarial and
  control as float32).

Each record also holds a CRC-32 of its clean batch, so a set is never decoded against other images,
and, for a set crafted by a targeted attack, the attacker's target of each image (`target`, int64,
one per image, -1 for none: `attacks.targets`), which the evaluation reads back (`targets`). An
untargeted set's records are as before, so the format stays 3.
Reading trusts nothing in the file: a record longer than its clean batch can need (`record_cap`) is
refused before it is read, checksums are compared before `torch.load`, keys, dtypes and shapes are
checked, and the payload is decompressed to at most the clean batch's values times the code's bytes a
value. Every fault is one `SetError` line naming the file and batch; `in` and `ensure` treat a file
whose checksums fail (or of another format) as absent, and `ensure` crafts it again under the set's
lock, with one warning line. Files of older formats (`<key>.pt`, float32 adversarial + control
images; `<key>.set` of format 2, without checksums) are not read: their sets are crafted again.
"""
from __future__ import annotations

import hashlib
import io
import os
import sys
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

import numpy as np
import torch
import zstandard
from filelock import FileLock
from medcommon.atomic import replaced
from tqdm.auto import tqdm

from .noise import control_noise
from .prediction import batch_seed

AdversarialSet = tuple[torch.Tensor, torch.Tensor]
# fill(write): write(clean, adv) per batch, write(clean, adv, targets) for a targeted set
Fill = Callable[[Callable[..., None]], None]
MAGIC, VERSION = b"MEDTRANSFER-SET\n", 3
DIGEST_BYTES = 16  # blake2b
HEADER_BYTES = len(MAGIC) + 2 + 8 + DIGEST_BYTES  # magic, version (uint16), seed (int64), digest; little-endian
LENGTH_BYTES = 8  # each batch record: its byte length (little-endian), its digest, then a torch.save payload
PREFIX_BYTES = LENGTH_BYTES + DIGEST_BYTES
CODES = {"grid8": 1, "steps": 4}  # bytes a value before compression
RECORD_ALLOWANCE = 1 << 16  # a record's torch.save framing and Zstandard's worst case beyond the raw code
SUFFIX = ".set"


class SetError(ValueError):
    """A stored set that cannot be read as it was written: one line naming the file (and batch)."""


def stored_bytes(values: int, quantized: bool) -> int:
    """About how many bytes a set of `values` image values takes, rounded up: 1 a value on the 8-bit
    grid, 1.5 in the `steps` code (0.5 to 1.3 measured for FGSM, iterative FGSM and PGD)."""
    return values if quantized else values * 3 // 2


def record_cap(values: int) -> int:
    """The most bytes a stored record of a batch of `values` image values can take."""
    raw = values * max(CODES.values())
    return raw + raw // 128 + RECORD_ALLOWANCE


def _digest(data) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


def _bits(images: torch.Tensor) -> np.ndarray:
    return images.detach().cpu().float().contiguous().numpy().view(np.uint32)


def _crc(clean: torch.Tensor) -> int:
    return zlib.crc32(_bits(clean).data)


RECORD_KEYS = {"shape", "clean_crc", "code", "packed"}  # and `target` in a targeted set's records


def encode(clean: torch.Tensor, adversarial: torch.Tensor, targets: torch.Tensor | None = None) -> dict:
    """A batch's record: `adversarial` (float32, the shape of `clean`) in its exact code relative to
    `clean`, with the images' `targets` (one whole number each) when given."""
    adversarial = adversarial.detach().cpu().float().contiguous()
    if adversarial.shape != clean.shape:
        raise ValueError(f"adversarial images of shape {tuple(adversarial.shape)} for clean ones of "
                         f"{tuple(clean.shape)}")
    record = {"shape": torch.tensor(adversarial.shape), "clean_crc": torch.tensor(_crc(clean))}
    if targets is not None:
        if targets.shape != (len(clean),) or targets.is_floating_point():
            raise ValueError(f"targets of shape {tuple(targets.shape)} for {len(clean)} images")
        record["target"] = targets.detach().cpu().long().contiguous()
    grid = torch.round(adversarial * 255.0).clamp(0, 255).to(torch.uint8)
    if torch.equal((grid.float() / 255.0).view(torch.int32), adversarial.view(torch.int32)):
        code, payload = "grid8", grid.numpy()
    else:  # uint32 arithmetic wraps around, so the difference undoes exactly for any two floats
        code, payload = "steps", _bits(adversarial) - _bits(clean)
    packed = zstandard.ZstdCompressor(level=1).compress(payload.data)
    return {**record, "code": code, "packed": torch.frombuffer(bytearray(packed), dtype=torch.uint8)}


def _checked(record) -> dict:
    """`record` if it holds what `encode` writes (keys, types, dtypes), else SetError."""
    if not isinstance(record, dict) or set(record) - {"target"} != RECORD_KEYS:
        keys = sorted(map(str, record)) if isinstance(record, dict) else type(record).__name__
        raise SetError(f"record holds {keys}, not clean_crc, code, packed, shape (and target)")
    kinds = {"shape": (torch.int64, 1), "clean_crc": (torch.int64, 0), "packed": (torch.uint8, 1),
             "target": (torch.int64, 1)}
    kinds = {name: kind for name, kind in kinds.items() if name in record}
    for name, (dtype, dims) in kinds.items():
        value = record[name]
        if not isinstance(value, torch.Tensor) or value.dtype != dtype or value.dim() != dims:
            raise SetError(f"record's {name} is not a {dims}-d {dtype} tensor")
    if not isinstance(record["code"], str) or record["code"] not in CODES:
        raise SetError(f"record's code {str(record['code'])[:40]!r} is none of {', '.join(CODES)}")
    return record


def decode(record: dict, clean: torch.Tensor) -> torch.Tensor:
    """The adversarial images of `record` (from `encode`) against the same `clean` images; SetError
    when the record does not hold a batch of their shape (never decompressing more than it must)."""
    record, clean = _checked(record), clean.detach().cpu().float()
    if record["shape"].tolist() != list(clean.shape):
        raise SetError(f"record of shape {record['shape'].tolist()[:8]} for clean images of {list(clean.shape)}")
    if "target" in record and (len(record["target"]) != len(clean) or bool((record["target"] < -1).any())):
        raise SetError(f"record's targets are not one whole number of at least -1 per image ({len(clean)})")
    size = clean.numel() * CODES[record["code"]]
    packed = record["packed"].numpy().data
    try:  # a frame that declares its size is decompressed to that size: refused above the bound first
        declared = zstandard.frame_content_size(packed)
        if declared > size:
            raise SetError(f"record declares {declared} bytes of {record['code']} code, {size} expected")
        payload = zstandard.ZstdDecompressor().decompress(packed, max_output_size=size)
    except zstandard.ZstdError as err:
        raise SetError(f"record does not decompress ({err})") from None
    if len(payload) != size:
        raise SetError(f"record decompresses to {len(payload)} bytes, {size} expected")
    if record["code"] == "grid8":
        return torch.frombuffer(bytearray(payload), dtype=torch.uint8).float().view(clean.shape) / 255.0
    bits = _bits(clean).reshape(-1) + np.frombuffer(payload, dtype=np.uint32)
    return torch.from_numpy(bits.view(np.float32)).view(clean.shape)


def _header(file: BinaryIO, path: Path) -> int:
    """The set's seed, from the header at the start of `file` (checked)."""
    header = file.read(HEADER_BYTES)
    if len(header) < len(MAGIC) + 2 or not header.startswith(MAGIC):
        raise SetError(f"{path}: not an adversarial set (no header)")
    version = int.from_bytes(header[len(MAGIC):len(MAGIC) + 2], "little")
    if version != VERSION:
        raise SetError(f"{path}: adversarial-set format {version}, this version reads {VERSION}")
    if len(header) < HEADER_BYTES or _digest(header[:-DIGEST_BYTES]) != header[-DIGEST_BYTES:]:
        raise SetError(f"{path}: header damaged (checksum mismatch or truncated)")
    return int.from_bytes(header[-DIGEST_BYTES - 8:-DIGEST_BYTES], "little", signed=True)


def _prefix(file: BinaryIO, path: Path, batch_id: int, cap: int, bound: str) -> tuple[int, bytes] | None:
    """A record's (length, digest), None at the end of the file; SetError when truncated or longer than
    `cap` (what `bound` says it is)."""
    prefix = file.read(PREFIX_BYTES)
    if not prefix:
        return None
    length = int.from_bytes(prefix[:LENGTH_BYTES], "little")
    if len(prefix) < PREFIX_BYTES:
        raise SetError(f"{path}: batch {batch_id}: record truncated")
    if length > cap:
        raise SetError(f"{path}: batch {batch_id}: record of {length} bytes, over {max(cap, 0)} ({bound})")
    return length, prefix[LENGTH_BYTES:]


class AdversarialSetCache:
    """Adversarial sets, one file per key under `root`, read back with their control noise.

    A file is written batch by batch and read back batch by batch, so no whole set is ever held in
    memory. Files are written once (a temporary file renamed into place, so readers never see a
    partial file; one left by a killed process is removed before the set is crafted again) and
    decode to the crafted float32 images bit for bit. A lock per key makes concurrent processes wait
    for the one that crafts instead of crafting the same set. Every read checks what it reads and
    raises `SetError` (one line naming the file and batch) on anything else; a damaged file is
    treated as absent by `in` and `ensure`, which crafts it again.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return set_path(self.root, key)

    def __contains__(self, key: str) -> bool:
        """Whether the set is stored intact (`damage`)."""
        return self.path(key).exists() and self.damage(key) is None

    def damage(self, key: str) -> str | None:
        """None when the stored set's header and every record are as written (their checksums), else
        the line that says what is wrong; the file is read in pieces, never whole."""
        path = self.path(key)
        try:
            with open(path, "rb") as file:
                _header(file, path)
                left = os.fstat(file.fileno()).st_size - HEADER_BYTES
                batch_id = 0
                while found := _prefix(file, path, batch_id, left - PREFIX_BYTES, "the bytes left in the file"):
                    length, digest = found
                    left -= PREFIX_BYTES + length
                    check = hashlib.blake2b(digest_size=DIGEST_BYTES)
                    while length:
                        piece = file.read(min(length, 1 << 20))
                        check.update(piece)
                        length -= len(piece)
                    if check.digest() != digest:
                        raise SetError(f"{path}: batch {batch_id}: record damaged (checksum mismatch)")
                    batch_id += 1
        except SetError as err:
            return str(err)
        except OSError as err:
            return f"{path}: unreadable ({err.strerror or type(err).__name__})"
        return None

    def _open(self, key: str) -> tuple[BinaryIO, int]:
        """The stored set's file, positioned after its header, and the set's seed."""
        path = self.path(key)
        if not path.exists():
            raise FileNotFoundError(f"adversarial-set cache: no set {path}")
        file = open(path, "rb")
        try:
            return file, _header(file, path)
        except SetError:
            file.close()
            raise

    @staticmethod
    def _record(file: BinaryIO, path: Path, batch_id: int, values: int) -> dict | None:
        """The next record (checked) of a batch of `values` image values, None at the end of the file."""
        found = _prefix(file, path, batch_id, record_cap(values), f"the most a batch of {values} values takes")
        if found is None:
            return None
        length, digest = found
        data = file.read(length)
        if len(data) < length:
            raise SetError(f"{path}: batch {batch_id}: record truncated")
        if _digest(data) != digest:
            raise SetError(f"{path}: batch {batch_id}: record damaged (checksum mismatch)")
        try:  # tensors only: a pickled object is refused, never run
            return _checked(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
        except SetError as err:
            raise SetError(f"{path}: batch {batch_id}: {err}") from None
        except Exception as err:
            raise SetError(f"{path}: batch {batch_id}: not a record of tensors ({type(err).__name__})") from None

    def _decoded(self, path: Path, record: dict, clean: torch.Tensor, seed: int, batch_id: int) -> AdversarialSet:
        clean = clean.detach().cpu().float()
        if int(record["clean_crc"]) != _crc(clean):
            raise SetError(f"{path}: batch {batch_id} was crafted on other clean images than it is read against")
        try:
            adversarial = decode(record, clean)
        except SetError as err:
            raise SetError(f"{path}: batch {batch_id}: {err}") from None
        generator = torch.Generator().manual_seed(batch_seed(seed, batch_id))
        return adversarial, control_noise(clean, adversarial, generator)

    def chunks(self, key: str, clean: Iterable[torch.Tensor]) -> Iterator[AdversarialSet]:
        """The stored set's (adversarial, control) batches in crafting order, read one at a time
        against the clean batches it was crafted on (`clean`, in the same order)."""
        for batch_id, (record, images, seed) in enumerate(self._records(key, clean)):
            yield self._decoded(self.path(key), record, images, seed, batch_id)

    def targets(self, key: str, clean: Iterable[torch.Tensor]) -> torch.Tensor | None:
        """The attacker's target of each image of the stored set (a targeted set's), None for an
        untargeted set; read against the clean batches the set was crafted on, every record checked
        as `chunks` checks it. SetError when only some batches hold targets."""
        path, found = self.path(key), []
        for batch_id, (record, images, seed) in enumerate(self._records(key, clean)):
            self._decoded(path, record, images, seed, batch_id)  # every check a read makes
            found.append(record.get("target"))
        if any(t is None for t in found) and any(t is not None for t in found):
            raise SetError(f"{path}: some batches hold targets, others not")
        return None if not found or found[0] is None else torch.cat(found)

    def _records(self, key: str, clean: Iterable[torch.Tensor]) -> Iterator[tuple[dict, torch.Tensor, int]]:
        """The stored set's records (checked as `_record` checks them) with their clean batches and the
        set's seed, in crafting order."""
        path = self.path(key)
        file, seed = self._open(key)
        with file:
            for batch_id, images in enumerate(clean):
                record = self._record(file, path, batch_id, images.numel())
                if record is None:
                    raise SetError(f"{path}: {batch_id} batches stored, more clean batches given")
                yield record, images, seed
            if file.read(1):
                raise SetError(f"{path}: more batches stored than clean batches given")

    def offsets(self, key: str) -> list[int]:
        """Where each batch of the stored set starts in its file (for `chunk`), record prefixes read only."""
        path = self.path(key)
        file, _ = self._open(key)
        offsets = []
        with file:
            size = os.fstat(file.fileno()).st_size
            while found := _prefix(file, path, len(offsets), size - file.tell() - PREFIX_BYTES,
                                   "the bytes left in the file"):
                offsets.append(file.tell() - PREFIX_BYTES)
                file.seek(found[0], os.SEEK_CUR)
        return offsets

    def chunk(self, key: str, offset: int, clean: torch.Tensor, batch_id: int) -> AdversarialSet:
        """Batch `batch_id` of the stored set (stored at `offset`, one of `offsets(key)`), read against
        its clean images."""
        path = self.path(key)
        file, seed = self._open(key)
        with file:
            file.seek(offset)
            record = self._record(file, path, batch_id, clean.numel())
            if record is None:
                raise SetError(f"{path}: no batch {batch_id} at byte {offset}")
            return self._decoded(path, record, clean, seed, batch_id)

    def load(self, key: str, clean: Iterable[torch.Tensor]) -> AdversarialSet:
        """The whole stored set as two tensors (adversarial, control), read against its clean batches."""
        adversarial, control = zip(*self.chunks(key, clean))
        return torch.cat(adversarial), torch.cat(control)

    def ensure(self, key: str, seed: int, fill: Fill) -> None:
        """Store the set under `key` unless some process has stored it intact already: `fill(write)`
        calls `write(clean, adversarial)` (`write(clean, adversarial, targets)` for a targeted set) once
        per batch, in batch order, and each batch is written as
        it comes. `seed`: the set's seed, from which each batch's control noise is drawn on reading.
        A damaged file (`damage`) is removed, with a warning line on stderr, and the set crafted again."""
        path = self.path(key)
        with FileLock(str(path) + ".lock"):
            if path.exists():
                reason = self.damage(key)
                if reason is None:
                    return
                tqdm.write(f"medtransfer: warning: {reason}; crafting the set again", file=sys.stderr)  # own line
                path.unlink()
            for stale in path.parent.glob(f"{key}.*.tmp"):  # left by a killed process
                stale.unlink()
            self.save(path, seed, fill)

    @staticmethod
    def save(path: Path, seed: int, fill: Fill) -> None:
        with replaced(path, prefix=f"{path.stem}.") as temporary, open(temporary, "wb") as file:
            header = MAGIC + VERSION.to_bytes(2, "little") + int(seed).to_bytes(8, "little", signed=True)
            file.write(header + _digest(header))

            def write(clean: torch.Tensor, adversarial: torch.Tensor, targets: torch.Tensor | None = None) -> None:
                payload = io.BytesIO()
                torch.save(encode(clean, adversarial, targets), payload)
                file.write(payload.getbuffer().nbytes.to_bytes(LENGTH_BYTES, "little"))
                file.write(_digest(payload.getbuffer()))
                file.write(payload.getbuffer())

            fill(write)
            file.flush()
            os.fsync(file.fileno())


def set_path(root: str | Path, key: str) -> Path:
    """Where the set `key` is stored under `root` (nothing is created)."""
    if not key or not key.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"adversarial-set cache: key {key!r} must be letters, digits, '-' or '_'")
    return Path(root) / f"{key}{SUFFIX}"
