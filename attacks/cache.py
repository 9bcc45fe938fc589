"""On-disk cache of adversarial sets, one file per key (the caller's identity of the set), written once.

A set is stored as what its adversarial images add to the clean ones, losslessly and compactly, and
read back against the same clean images; the control noise is never stored: it is drawn again on
reading from the perturbation and the set's per-batch seed (`batch_seed`), exactly as crafting
would draw it. A file (`<key>.set`) starts with a header (`MAGIC`, the format `VERSION`, the set's
seed), then one length-prefixed record per crafting batch, a weights-only `torch.save` of tensors
in one of two exact codes, Zstandard compressed (level 1: a third of zlib's time at a smaller size):

- `grid8`: when the adversarial images are on the 8-bit grid k / 255 (quantised attacks): k as
  uint8, at most 1 byte a value;
- `steps` otherwise: the difference of the float32 bit patterns of the adversarial and the clean
  value, a uint32 (exact for any two floats). FGSM and iterative FGSM move a value by a few
  multiples of a step size, which in float32 is one of a few bit differences per power of two of
  the value, so the differences compress to under a byte a value (8 bytes before: adversarial and
  control as float32).

Each record also holds a CRC-32 of its clean batch, so a set is never decoded against other images.
Files of older formats (`<key>.pt`, float32 adversarial + control images) are not read: their sets
are crafted again.
"""
from __future__ import annotations

import io
import os
import tempfile
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

import numpy as np
import torch
import zstandard
from filelock import FileLock

from .noise import control_noise
from .prediction import batch_seed

AdversarialSet = tuple[torch.Tensor, torch.Tensor]
Fill = Callable[[Callable[[torch.Tensor, torch.Tensor], None]], None]  # fill(write): write(clean, adv) per batch
MAGIC, VERSION = b"MEDTRANSFER-SET\n", 2
HEADER_BYTES = len(MAGIC) + 2 + 8  # magic, format version (uint16), seed (int64), little-endian
LENGTH_BYTES = 8  # each batch record: its byte length (little-endian), then a torch.save payload
SUFFIX = ".set"


def stored_bytes(values: int, quantized: bool) -> int:
    """About how many bytes a set of `values` image values takes, rounded up: 1 a value on the 8-bit
    grid, 1.5 in the `steps` code (0.5 to 1.3 measured for FGSM, iterative FGSM and PGD)."""
    return values if quantized else values * 3 // 2


def _bits(images: torch.Tensor) -> np.ndarray:
    return images.detach().cpu().float().contiguous().numpy().view(np.uint32)


def _crc(clean: torch.Tensor) -> int:
    return zlib.crc32(_bits(clean).data)


def encode(clean: torch.Tensor, adversarial: torch.Tensor) -> dict:
    """A batch's record: `adversarial` (float32) in its exact code relative to `clean`."""
    adversarial = adversarial.detach().cpu().float().contiguous()
    record = {"shape": torch.tensor(adversarial.shape), "clean_crc": torch.tensor(_crc(clean))}
    grid = torch.round(adversarial * 255.0).clamp(0, 255).to(torch.uint8)
    if torch.equal((grid.float() / 255.0).view(torch.int32), adversarial.view(torch.int32)):
        code, payload = "grid8", grid.numpy()
    else:  # uint32 arithmetic wraps around, so the difference undoes exactly for any two floats
        code, payload = "steps", _bits(adversarial) - _bits(clean)
    packed = zstandard.ZstdCompressor(level=1).compress(payload.data)
    return {**record, "code": code, "packed": torch.frombuffer(bytearray(packed), dtype=torch.uint8)}


def decode(record: dict, clean: torch.Tensor) -> torch.Tensor:
    """The adversarial images of `record` (from `encode`) against the same `clean` images."""
    shape = torch.Size(record["shape"].tolist())
    payload = zstandard.ZstdDecompressor().decompress(record["packed"].numpy().data)
    if record["code"] == "grid8":
        return torch.frombuffer(bytearray(payload), dtype=torch.uint8).float().view(shape) / 255.0
    bits = _bits(clean).reshape(-1) + np.frombuffer(payload, dtype=np.uint32)
    return torch.from_numpy(bits.view(np.float32)).view(shape)


class AdversarialSetCache:
    """Adversarial sets, one file per key under `root`, read back with their control noise.

    A file is written batch by batch and read back batch by batch, so no whole set is ever held in
    memory. Files are written once (a temporary file renamed into place, so readers never see a
    partial file; one left by a killed process is removed before the set is crafted again) and
    decode to the crafted float32 images bit for bit. A lock per key makes concurrent processes wait
    for the one that crafts instead of crafting the same set.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return set_path(self.root, key)

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()

    def _open(self, key: str) -> tuple[BinaryIO, int]:
        """The stored set's file, positioned after its header, and the set's seed."""
        path = self.path(key)
        if not path.exists():
            raise FileNotFoundError(f"adversarial-set cache: no set {path}")
        file = open(path, "rb")
        header = file.read(HEADER_BYTES)
        if len(header) < HEADER_BYTES or not header.startswith(MAGIC):
            file.close()
            raise ValueError(f"{path}: not an adversarial set of tensors (no header); delete the file to craft "
                             "it again")
        version = int.from_bytes(header[len(MAGIC):len(MAGIC) + 2], "little")
        if version != VERSION:
            file.close()
            raise ValueError(f"{path}: adversarial-set format {version}, this version reads {VERSION}; delete the "
                             "file to craft it again")
        return file, int.from_bytes(header[-8:], "little", signed=True)

    @staticmethod
    def _record(file: BinaryIO, path: Path) -> dict | None:
        header = file.read(LENGTH_BYTES)
        if not header:
            return None
        try:  # tensors only: a pickled object is refused, never run
            return torch.load(io.BytesIO(file.read(int.from_bytes(header, "little"))), map_location="cpu",
                              weights_only=True)
        except Exception as err:
            raise ValueError(f"{path}: not an adversarial set of tensors ({type(err).__name__}); "
                             "delete the file to craft it again") from None

    def _decoded(self, path: Path, record: dict, clean: torch.Tensor, seed: int, batch_id: int) -> AdversarialSet:
        clean = clean.detach().cpu().float()
        if int(record["clean_crc"]) != _crc(clean):
            raise ValueError(f"{path}: batch {batch_id} was crafted on other clean images than it is read "
                             "against; delete the file to craft it again")
        adversarial = decode(record, clean)
        generator = torch.Generator().manual_seed(batch_seed(seed, batch_id))
        return adversarial, control_noise(clean, adversarial, generator)

    def chunks(self, key: str, clean: Iterable[torch.Tensor]) -> Iterator[AdversarialSet]:
        """The stored set's (adversarial, control) batches in crafting order, read one at a time
        against the clean batches it was crafted on (`clean`, in the same order)."""
        file, seed = self._open(key)
        with file:
            for batch_id, images in enumerate(clean):
                record = self._record(file, self.path(key))
                if record is None:
                    raise ValueError(f"{self.path(key)}: {batch_id} batches stored, more clean batches given")
                yield self._decoded(self.path(key), record, images, seed, batch_id)
            if file.read(LENGTH_BYTES):
                raise ValueError(f"{self.path(key)}: more batches stored than clean batches given")

    def offsets(self, key: str) -> list[int]:
        """Where each batch of the stored set starts in its file (for `chunk`), headers read only."""
        file, _ = self._open(key)
        offsets = []
        with file:
            while header := file.read(LENGTH_BYTES):
                offsets.append(file.tell() - LENGTH_BYTES)
                file.seek(int.from_bytes(header, "little"), os.SEEK_CUR)
        return offsets

    def chunk(self, key: str, offset: int, clean: torch.Tensor, batch_id: int) -> AdversarialSet:
        """Batch `batch_id` of the stored set (stored at `offset`, one of `offsets(key)`), read against
        its clean images."""
        file, seed = self._open(key)
        with file:
            file.seek(offset)
            return self._decoded(self.path(key), self._record(file, self.path(key)), clean, seed, batch_id)

    def load(self, key: str, clean: Iterable[torch.Tensor]) -> AdversarialSet:
        """The whole stored set as two tensors (adversarial, control), read against its clean batches."""
        adversarial, control = zip(*self.chunks(key, clean))
        return torch.cat(adversarial), torch.cat(control)

    def ensure(self, key: str, seed: int, fill: Fill) -> None:
        """Store the set under `key` unless some process has stored it already: `fill(write)` calls
        `write(clean, adversarial)` once per batch, in batch order, and each batch is written as it
        comes. `seed`: the set's seed, from which each batch's control noise is drawn on reading."""
        path = self.path(key)
        with FileLock(str(path) + ".lock"):
            if not path.exists():
                for stale in path.parent.glob(f"{key}.*.tmp"):  # left by a killed process
                    stale.unlink()
                self.save(path, seed, fill)

    @staticmethod
    def save(path: Path, seed: int, fill: Fill) -> None:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(MAGIC + VERSION.to_bytes(2, "little") + int(seed).to_bytes(8, "little", signed=True))

                def write(clean: torch.Tensor, adversarial: torch.Tensor) -> None:
                    payload = io.BytesIO()
                    torch.save(encode(clean, adversarial), payload)
                    file.write(payload.getbuffer().nbytes.to_bytes(LENGTH_BYTES, "little"))
                    file.write(payload.getbuffer())

                fill(write)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise


def set_path(root: str | Path, key: str) -> Path:
    """Where the set `key` is stored under `root` (nothing is created)."""
    if not key or not key.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"adversarial-set cache: key {key!r} must be letters, digits, '-' or '_'")
    return Path(root) / f"{key}{SUFFIX}"
