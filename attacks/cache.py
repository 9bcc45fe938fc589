"""On-disk cache of adversarial sets, one file per key (the caller's identity of the set), written once."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import torch
from filelock import FileLock

AdversarialSet = tuple[torch.Tensor, torch.Tensor]
Fill = Callable[[Callable[[torch.Tensor, torch.Tensor], None]], None]  # fill(write): write(adv, control) per chunk
LENGTH_BYTES = 8  # each chunk record: its byte length (little-endian), then a torch.save payload


class AdversarialSetCache:
    """Adversarial images and their control noise, one file per key under `root`.

    A file is a sequence of chunks (one per crafting batch), each a length-prefixed `torch.save` of
    {"adversarial", "control"}; it is written chunk by chunk and read back chunk by chunk, so no
    whole set is ever held in memory. Files are written once (a temporary file renamed into place,
    so readers never see a partial file; one left by a killed process is removed before the set is
    crafted again) and hold float tensors as crafted (lossless). A lock per key makes concurrent
    processes wait for the one that crafts instead of crafting the same set.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if not key or not key.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"adversarial-set cache: key {key!r} must be letters, digits, '-' or '_'")
        return self.root / f"{key}.pt"

    def __contains__(self, key: str) -> bool:
        return self.path(key).exists()

    def _stored(self, key: str) -> Path:
        path = self.path(key)
        if not path.exists():
            raise FileNotFoundError(f"adversarial-set cache: no set {path}")
        return path

    @staticmethod
    def _read(file: BinaryIO, path: Path, length: int) -> AdversarialSet:
        try:  # tensors only: a pickled object is refused, never run
            stored = torch.load(io.BytesIO(file.read(length)), map_location="cpu", weights_only=True)
            return stored["adversarial"], stored["control"]
        except Exception as err:
            raise ValueError(f"{path}: not an adversarial set of tensors ({type(err).__name__}); "
                             "delete the file to craft it again") from None

    def chunks(self, key: str) -> Iterator[AdversarialSet]:
        """The stored set's (adversarial, control) chunks in crafting order, read one at a time."""
        path = self._stored(key)
        with open(path, "rb") as file:
            while header := file.read(LENGTH_BYTES):
                yield self._read(file, path, int.from_bytes(header, "little"))

    def offsets(self, key: str) -> list[int]:
        """Where each chunk of the stored set starts in its file (for `chunk`), headers read only."""
        path, offsets = self._stored(key), []
        with open(path, "rb") as file:
            while header := file.read(LENGTH_BYTES):
                offsets.append(file.tell() - LENGTH_BYTES)
                file.seek(int.from_bytes(header, "little"), os.SEEK_CUR)
        return offsets

    def chunk(self, key: str, offset: int) -> AdversarialSet:
        """The chunk stored at `offset` (one of `offsets(key)`)."""
        path = self._stored(key)
        with open(path, "rb") as file:
            file.seek(offset)
            return self._read(file, path, int.from_bytes(file.read(LENGTH_BYTES), "little"))

    def load(self, key: str) -> AdversarialSet:
        """The whole stored set as two tensors."""
        adversarial, control = zip(*self.chunks(key))
        return torch.cat(adversarial), torch.cat(control)

    def ensure(self, key: str, fill: Fill) -> None:
        """Store the set under `key` unless some process has stored it already: `fill(write)` calls
        `write(adversarial, control)` once per chunk, in order, and each chunk is written as it comes."""
        path = self.path(key)
        with FileLock(str(path) + ".lock"):
            if not path.exists():
                for stale in path.parent.glob(f"{path.stem}.*.tmp"):  # left by a killed process
                    stale.unlink()
                self.save(path, fill)

    def load_or_craft(self, key: str, craft_fn: Callable[[], AdversarialSet]) -> AdversarialSet:
        """The set stored under `key`; crafted by `craft_fn() -> (adversarial, control)` and stored
        (as one chunk) first if no process has done so yet."""
        self.ensure(key, lambda write: write(*craft_fn()))
        return self.load(key)

    @staticmethod
    def save(path: Path, fill: Fill) -> None:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                def write(adversarial: torch.Tensor, control: torch.Tensor) -> None:
                    payload = io.BytesIO()
                    # clones: a view would store its whole underlying storage
                    torch.save({"adversarial": adversarial.detach().cpu().clone(memory_format=torch.contiguous_format),
                                "control": control.detach().cpu().clone(memory_format=torch.contiguous_format)},
                               payload)
                    file.write(payload.getbuffer().nbytes.to_bytes(LENGTH_BYTES, "little"))
                    file.write(payload.getbuffer())

                fill(write)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
