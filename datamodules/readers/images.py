"""Image files: path checks, cheap up-front validation (pixel cap from the header, mode) and per-item
loading as uint8 CHW, high-depth images read at their depth."""
from __future__ import annotations

import os
import struct
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
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
DEFAULT_MAX_PIXELS = 50_000_000  # data.max_pixels
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# PIL modes read as 8-bit grey or colour (convert("L" / "RGB") keeps their range)
EIGHT_BIT_MODES = ("1", "L", "P", "LA", "PA", "La", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV")
# high-depth modes: the value read as 1.0 (16-bit: the bit depth's full range; float TIFF: 255, as 8-bit)
FULL_SCALE = {**dict.fromkeys(SIXTEEN_BIT_MODES, 65535.0), "F": 255.0}


class TooManyPixels(ValueError):
    """An image file that declares more pixels than `data.max_pixels` (read from its header)."""


@dataclass
class PixelCap:
    """`data.max_pixels`, checked from headers before any pixel is decoded. `found` None: the first
    file above it raises TooManyPixels; a list: each one's line is appended instead (plan counts them)."""

    limit: int = DEFAULT_MAX_PIXELS
    found: list[str] | None = None

    def allows(self, pixels: int, shape: str, where: str) -> bool:
        if pixels <= self.limit:
            return True
        line = f"{where}: {shape} = {pixels:,} pixels, above data.max_pixels={self.limit:,}"
        if self.found is None:
            raise TooManyPixels(line)
        self.found.append(line)
        return False


def over_cap_summary(first: TooManyPixels, found: list[str]) -> TooManyPixels:
    """The refusal of a data set whose files `found` (lines, `PixelCap`) are above the cap: how many,
    and the first; `first` alone when it is the only one."""
    if len(found) < 2:
        return first
    return TooManyPixels(f"{len(found)} image files above data.max_pixels; the first: {found[0]}")


@contextmanager
def image_header(source, cap: PixelCap, where: str):
    """PIL's image of `source` (a path or an open file; `where` names it) with only its header read, its
    size within `cap` (a PNG's IHDR is read first: PIL is never handed a PNG above the cap). PIL's own global
    decompression-bomb limit is not relied on: its warning is silenced, its error is a TooManyPixels line."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as handle:
            head = handle.read(24)
    else:
        head = source.read(24)
        source.seek(0)
    if head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        if not cap.allows(width * height, f"PNG of {width} x {height}", where):
            yield None
            return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(source)
        except Image.DecompressionBombError as err:
            raise TooManyPixels(f"{where}: {' '.join(str(err).split())}") from None
    with img:
        width, height = img.size
        yield img if cap.allows(width * height, f"{img.format} of {width} x {height}", where) else None


def check_mode(img: Image.Image, path: Path) -> None:
    if img.mode not in EIGHT_BIT_MODES and img.mode not in FULL_SCALE:
        raise ValueError(f"{path}: {img.format} pixels of mode {img.mode} are not read "
                         "(8-bit grey or colour, 16-bit grey, or float TIFF)")


def check_image(path: Path, where: str, cap: PixelCap | None = None) -> None:
    """Header readable (PNG: signature and IHDR chunk first; any format through PIL's header read), at
    most `cap` pixels and a mode that is read (`check_mode`), for PNG/JPEG the end-of-image marker
    present (catches truncation), for floating-point images (TIFF mode F) every pixel finite and in
    [0, 255]. One open of the file; the pixels of other modes are checked when they are decoded."""
    cap = cap or PixelCap()
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: image file {path} not found") from None
    except OSError as err:
        raise ValueError(f"{path}: unreadable image ({err.__class__.__name__})") from None
    with handle:
        try:
            with image_header(handle, cap, f"{where}: {path}") as img:
                if img is None:  # above the cap, recorded in cap.found
                    return
                fmt = img.format
                check_mode(img, path)
                if img.mode == "F":
                    pixels = np.asarray(img)
                    if not np.isfinite(pixels).all():
                        raise ValueError(f"{path}: NaN or inf pixels")
                    if pixels.min() < 0 or pixels.max() > 255:
                        raise ValueError(f"{path}: float pixels outside [0, 255] (from {pixels.min():g} to "
                                         f"{pixels.max():g}); float TIFFs are read on the 8-bit scale")
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise ValueError(f"{path}: unreadable image ({err.__class__.__name__})") from None
        if fmt in ("PNG", "JPEG"):
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 64))
            tail = handle.read()
            if (fmt == "PNG" and b"IEND" not in tail) or (fmt == "JPEG" and b"\xff\xd9" not in tail):
                raise ValueError(f"{path}: truncated {fmt} image")


def unit_image(img: Image.Image) -> Image.Image:
    """A high-depth image (mode in FULL_SCALE) as one float channel in [0, 1]: its values over the
    mode's full scale (16-bit: /65535, whatever sBIT says: PNG stores sBIT samples scaled to the full depth)."""
    array = np.asarray(img).astype(np.float32) / np.float32(FULL_SCALE[img.mode])
    return Image.fromarray(np.clip(array, 0.0, 1.0), mode="F")


def crop_field_of_view(img: Image.Image, threshold: int = 10) -> Image.Image:
    """Fundus preprocessing (docs/protocol.md): crop to the bounding box of the thresholded field of view
    and zero-pad to a square (`threshold` on the 8-bit scale; unit float images are compared at their depth)."""
    grey = np.asarray(img) * 255.0 if img.mode == "F" else np.asarray(img.convert("L"))
    ys, xs = np.nonzero(grey > threshold)
    if len(xs):
        img = img.crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    side = max(img.size)
    square = Image.new(img.mode, (side, side))
    square.paste(img, ((side - img.size[0]) // 2, (side - img.size[1]) // 2))
    return square


def to_chw(img: Image.Image, channels: int, size: int) -> torch.Tensor:
    """uint8 (channels, size, size): 8-bit modes through PIL's grey or RGB conversion; a unit float
    image (`unit_image`) resized at its depth, then rounded to 8 bits (grey repeated for RGB)."""
    if img.mode != "F":
        img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):  # a large reduction first averages whole blocks (Image.reduce), then filters
        img = img.resize((size, size), Image.BILINEAR, reducing_gap=2.0)
    if img.mode == "F":
        grey = np.round(np.clip(np.asarray(img), 0.0, 1.0) * 255.0).astype(np.uint8)
        array = np.repeat(grey[..., None], channels, axis=2)
    else:
        array = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(array.copy()).view(size, size, -1).permute(2, 0, 1).contiguous()


class ImageFileReader:
    """index -> uint8 (channels, size, size) from a list of image files; picklable for workers. Each
    file's header is checked against `max_pixels` again before its pixels are decoded."""

    def __init__(self, paths: list[Path], channels: int, size: int, fov_crop: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.paths, self.channels, self.size, self.fov_crop = list(paths), channels, size, fov_crop
        self.max_pixels = max_pixels

    def __call__(self, i: int) -> torch.Tensor:
        path = self.paths[i]
        try:
            with image_header(path, PixelCap(self.max_pixels), str(path)) as img:
                check_mode(img, path)
                deep = img.mode in FULL_SCALE
                if not (self.fov_crop or deep):  # JPEG: decode at the smallest DCT scale still >= size
                    img.draft("L" if self.channels == 1 else "RGB", (self.size, self.size))
                img.load()
                if deep:
                    img = unit_image(img)
                if self.fov_crop:
                    img = crop_field_of_view(img)
                return to_chw(img, self.channels, self.size)
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
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
