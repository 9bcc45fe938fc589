"""Image files: path checks, cheap up-front validation and per-item loading as uint8 CHW."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def progress(rows, total: int | None, what: str):
    """`rows` with a progress bar counting them on a terminal (indexing and validating a data set)."""
    return tqdm(rows, total=total, desc=what, unit="file", leave=False, disable=None)


def require_file(path: Path, what: str = "file") -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    return path


def require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: data root not found")
    return path


def inside_root(root: Path, relative: str, where: str) -> Path:
    """`root/relative`, refusing paths that resolve outside `root` (.., absolute paths, symlinks)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"{where}: image path {relative!r} resolves outside the data root {root}")
    return path


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_image(path: Path, where: str) -> None:
    """Header readable (PNG: signature and IHDR chunk; JPEG: start-of-image marker; any other format
    through PIL), for PNG/JPEG the end-of-image marker present (catches truncation), for
    floating-point images (TIFF mode F) every pixel finite. One open of the file; the pixels are
    checked when they are decoded."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: image file {path} not found") from None
    except OSError as err:
        raise ValueError(f"{path}: unreadable image ({err.__class__.__name__})") from None
    with handle:
        head = handle.read(16)
        if head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR":
            fmt = "PNG"
        elif head.startswith(b"\xff\xd8\xff"):
            fmt = "JPEG"
        else:
            handle.seek(0)
            try:
                with Image.open(handle) as img:
                    fmt = img.format
                    if img.mode == "F" and not np.isfinite(np.asarray(img)).all():
                        raise ValueError(f"{path}: NaN or inf pixels")
            except (UnidentifiedImageError, OSError) as err:
                raise ValueError(f"{path}: unreadable image ({err.__class__.__name__})") from None
        if fmt in ("PNG", "JPEG"):
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 64))
            tail = handle.read()
            if (fmt == "PNG" and b"IEND" not in tail) or (fmt == "JPEG" and b"\xff\xd9" not in tail):
                raise ValueError(f"{path}: truncated {fmt} image")


def crop_field_of_view(img: Image.Image, threshold: int = 10) -> Image.Image:
    """Fundus preprocessing (docs/protocol.md): crop to the bounding box of the thresholded field of view
    and zero-pad to a square."""
    grey = np.asarray(img.convert("L"))
    ys, xs = np.nonzero(grey > threshold)
    if len(xs):
        img = img.crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    side = max(img.size)
    square = Image.new(img.mode, (side, side))
    square.paste(img, ((side - img.size[0]) // 2, (side - img.size[1]) // 2))
    return square


def to_chw(img: Image.Image, channels: int, size: int) -> torch.Tensor:
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):  # a large reduction first averages whole blocks (Image.reduce), then filters
        img = img.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(array.copy()).view(size, size, -1).permute(2, 0, 1).contiguous()


class ImageFileReader:
    """index -> uint8 (channels, size, size) from a list of image files; picklable for workers."""

    def __init__(self, paths: list[Path], channels: int, size: int, fov_crop: bool = False):
        self.paths, self.channels, self.size, self.fov_crop = list(paths), channels, size, fov_crop

    def __call__(self, i: int) -> torch.Tensor:
        path = self.paths[i]
        try:
            with Image.open(path) as img:
                if not self.fov_crop:  # JPEG: decode at the smallest DCT scale still >= size
                    img.draft("L" if self.channels == 1 else "RGB", (self.size, self.size))
                img.load()
                if self.fov_crop:
                    img = crop_field_of_view(img)
                return to_chw(img, self.channels, self.size)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{path}: unreadable image ({' '.join(str(err).split())})") from None


def index_images(root: Path) -> dict[str, Path]:
    """File name -> path for every image file under `root` (any folder layout; symlinked folders are
    not entered); symlinked files that lead outside `root` are left out. One directory scan: a
    regular file found this way is inside `root` without resolving its path."""
    inside, paths = root.resolve(), []
    bar = progress(iter(()), None, f"indexing {root}")

    def scan(folder: str) -> None:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    scan(entry.path)
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                    if entry.is_symlink():
                        target = Path(entry.path).resolve()
                        if not (target.is_file() and target.is_relative_to(inside)):
                            continue
                    elif not entry.is_file(follow_symlinks=False):
                        continue
                    paths.append(entry.path)
                    bar.update()

    scan(str(root))
    bar.close()
    found = {}
    for path in sorted(paths):
        found.setdefault(os.path.basename(path), Path(path))
    return found
