"""Generated images written chunk by chunk and read back image by image, never all in memory.

A generator fills its output array one chunk at a time (`images[s:s + m] = chunk`); `ImageSink`
stands in for that array: each chunk goes to a raw file (or, with no cache, a tensor) and a
progress bar (on a terminal) counts it. `StoredImages` reads single images or slices back from the file with
positioned reads, so a process holds only the images it is using.
"""
from __future__ import annotations

import math
import os

import torch
from tqdm.auto import tqdm


class ImageSink:
    """Write-only stand-in for a generator's (N, C, H, W) uint8 output array.

    `sink[s:e] = chunk` and, for single-channel arrays, `sink[s:e, 0] = chunk` are the writes it
    takes; `write(start, images)` stores them (in a file or a tensor).
    """

    def __init__(self, shape: tuple[int, ...], write, description: str):
        self.shape = tuple(int(d) for d in shape)
        self.write = write
        self.bar = tqdm(total=self.shape[0], desc=description, unit="img", leave=False, disable=None)

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, key, value: torch.Tensor) -> None:
        rows, channel = key if isinstance(key, tuple) else (key, None)
        if channel is not None:  # images[s:e, 0] = (m, H, W) of a single-channel array
            if channel != 0 or self.shape[1] != 1:
                raise IndexError("ImageSink: only channel 0 of a single-channel array can be written apart")
            value = value.unsqueeze(1)
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise IndexError("ImageSink: writes must be contiguous row slices")
        start = rows.start or 0
        if tuple(value.shape) != (len(value), *self.shape[1:]) or start + len(value) > self.shape[0]:
            raise ValueError(f"ImageSink: chunk of shape {tuple(value.shape)} does not fit rows {start}.. "
                             f"of {self.shape}")
        self.write(start, value.to(torch.uint8).contiguous())
        self.bar.update(len(value))

    def close(self) -> None:
        self.bar.close()


def memory_sink(description: str):
    """A factory (called like `torch.empty(*shape, dtype=...)`) of sinks that fill an in-memory
    tensor, available as `sink.tensor`."""

    def make(*shape, dtype=torch.uint8) -> ImageSink:
        tensor = torch.empty(shape, dtype=dtype)

        def write(start: int, images: torch.Tensor) -> None:
            tensor[start:start + len(images)] = images

        sink = ImageSink(shape, write, description)
        sink.tensor = tensor
        return sink

    return make


def file_sink(fd: int, description: str):
    """A factory of sinks that write the array, row-major, into the open file `fd`."""

    def make(*shape, dtype=torch.uint8) -> ImageSink:
        image_bytes = math.prod(shape[1:])

        def write(start: int, images: torch.Tensor) -> None:
            data = images.numpy().tobytes()
            offset = start * image_bytes
            while data:
                written = os.pwrite(fd, data, offset)
                data, offset = data[written:], offset + written

        return ImageSink(shape, write, description)

    return make


class StoredImages:
    """Read access to an (N, C, H, W) uint8 array in a raw file: `reader(i)` -> (C, H, W) tensor,
    `reader.read(start, stop)` -> (stop - start, C, H, W). Picklable (for loader workers); each
    process opens the file itself."""

    def __init__(self, path, shape: tuple[int, ...]):
        self.path, self.shape = str(path), tuple(int(d) for d in shape)
        self.image_bytes = math.prod(self.shape[1:])
        self._fd, self._pid = None, None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def _file(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def read(self, start: int, stop: int) -> torch.Tensor:
        if not 0 <= start <= stop <= self.shape[0]:
            raise IndexError(f"{self.path}: rows {start}:{stop} outside 0:{self.shape[0]}")
        size = (stop - start) * self.image_bytes
        if size == 0:
            return torch.empty((0, *self.shape[1:]), dtype=torch.uint8)
        data = bytearray(size)
        view, offset, done = memoryview(data), start * self.image_bytes, 0
        while done < size:
            got = os.preadv(self._file(), [view[done:]], offset + done)
            if got == 0:
                raise ValueError(f"{self.path}: file ends before row {stop} (truncated cache entry)")
            done += got
        return torch.frombuffer(data, dtype=torch.uint8).view(stop - start, *self.shape[1:])

    def __call__(self, i: int) -> torch.Tensor:
        return self.read(i, i + 1)[0]

    def __del__(self, getpid=os.getpid, close=os.close):  # bound now: `os` may be gone at interpreter exit
        if self._fd is not None and self._pid == getpid():
            close(self._fd)
