"""DICOM files (one image per file) with a CSV of labels, through pydicom.

Pixels to [0, 1]: the modality LUT or rescale (slope, intercept) first; then the first VOI LUT of
the file, else its first window (centre, width; the standard's linear function), else the range
the stored bits and the rescale allow; MONOCHROME1 is inverted (bright = dense, as in MONOCHROME2).
Colour files (3 samples per pixel) are scaled by their bit depth. Computed in float32.

Before any pixel is decoded, the header must hold the Image Pixel module's tags (`REQUIRED_TAGS`)
and at most `data.max_pixels` rows x columns x frames x samples, whatever the transfer syntax.
"""
from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder

from .csv_folder import read_csv_folder
from .images import DEFAULT_MAX_PIXELS, PixelCap
from .source import Source


def _open(path: Path, where: str, pixels: bool):
    try:
        return pydicom.dcmread(path, defer_size=None if pixels else "1 KB")
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as err:
        raise ValueError(f"{where}: {path}: not a readable DICOM file ({' '.join(str(err).split())[:100]})") from None


# the tags pydicom needs to decode any pixel data (DICOM PS3.3 C.7.6.3, the Image Pixel module)
REQUIRED_TAGS = ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored",
                 "PixelRepresentation")


def header_numbers(ds, path: Path, where: str) -> dict[str, int]:
    """The Image Pixel module's numbers (and NumberOfFrames, default 1): each present, a whole number
    in its range, else one line naming the tag."""
    if "PixelData" not in ds:
        raise ValueError(f"{where}: {path}: no pixel data (a DICOM {ds.get('Modality', 'object')} without an image)")
    missing = next((tag for tag in REQUIRED_TAGS if tag not in ds), None)
    if missing:
        raise ValueError(f"{where}: {path}: missing tag {missing}, required to read the pixels")
    numbers = {}
    for tag in [tag for tag in REQUIRED_TAGS if tag != "PhotometricInterpretation"] + ["NumberOfFrames"]:
        value = ds.get(tag)
        if tag == "NumberOfFrames" and value in (None, ""):
            value = 1
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = -1
        if not (0 if tag == "PixelRepresentation" else 1) <= number <= 2 ** 32:
            raise ValueError(f"{where}: {path}: tag {tag} is {str(value)[:40]!r}, not a valid count")
        numbers[tag] = number
    if numbers["BitsAllocated"] not in (1, 8, 16, 32, 64) or numbers["BitsStored"] > numbers["BitsAllocated"]:
        raise ValueError(f"{where}: {path}: {numbers['BitsStored']} bits stored in {numbers['BitsAllocated']} "
                         "allocated; allocated must be 1, 8, 16, 32 or 64 and hold the stored bits")
    return numbers


def require_cap(numbers: dict[str, int], path: Path, where: str, cap: PixelCap) -> bool:
    """Rows x columns x frames x samples per pixel within `cap` (every transfer syntax; from the header)."""
    shape = (numbers["Rows"], numbers["Columns"], numbers["NumberOfFrames"], numbers["SamplesPerPixel"])
    return cap.allows(math.prod(shape), f"DICOM of {' x '.join(map(str, shape))} (rows x columns x frames x samples)",
                      f"{where}: {path}")


def check_dicom(path: Path, where: str, cap: PixelCap | None = None) -> None:
    """A single-frame DICOM image whose pixels this installation can decode, within `cap` (header and
    lengths only: the pixel data is deferred, never read)."""
    if not path.is_file():
        raise FileNotFoundError(f"{where}: DICOM file {path} not found")
    ds = _open(path, where, pixels=False)
    try:
        numbers = header_numbers(ds, path, where)
        if not require_cap(numbers, path, where, cap or PixelCap()):
            return
        syntax = getattr(ds.get("file_meta", None), "TransferSyntaxUID", None)
    except ValueError:
        raise
    except Exception as err:  # pydicom parses a deferred header element here: it raises many kinds
        raise ValueError(f"{where}: {path}: unreadable DICOM header ({' '.join(str(err).split())[:100]})") from None
    frames = numbers["NumberOfFrames"]
    if frames > 1:
        raise ValueError(f"{where}: {path}: multi-frame DICOM ({frames} frames); one image per file is read")
    if syntax is not None and syntax.is_compressed:
        if not get_decoder(syntax).is_available:
            raise ValueError(f"{where}: {path}: compressed transfer syntax {syntax.name}, and no decoder for it "
                             "is installed (pylibjpeg or GDCM plugins decode it)")
    else:
        needed = numbers["Rows"] * numbers["Columns"] * numbers["SamplesPerPixel"] * numbers["BitsAllocated"] // 8
        raw = ds.get_item("PixelData")  # the raw element: its length without reading the pixels
        stored = raw.length if hasattr(raw, "length") else len(raw.value)
        if stored < needed:
            raise ValueError(f"{where}: {path}: truncated pixel data ({stored} of {needed} bytes)")


def unit_pixels(ds) -> np.ndarray:
    """(H, W) or (H, W, 3) float32 in [0, 1] (see the module docstring)."""
    raw = ds.pixel_array
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)))
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        return np.clip(raw.astype(np.float32) / np.float32(2 ** bits - 1), 0.0, 1.0)
    values = apply_modality_lut(raw, ds).astype(np.float32)
    if "VOILUTSequence" in ds:
        out_bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        unit = apply_voi_lut(values, ds, index=0, prefer_lut=True).astype(np.float32) / np.float32(2 ** out_bits - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        centre, width = (float(_first(ds.WindowCenter)), float(_first(ds.WindowWidth)))
        unit = ((values - np.float32(centre - 0.5)) / np.float32(max(width - 1.0, 1e-9)) + 0.5)  # the linear window
    else:
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        low, high = sorted((low * slope + intercept, high * slope + intercept))
        unit = (values - np.float32(low)) / np.float32(high - low)
    unit = np.clip(unit, 0.0, 1.0)
    return 1.0 - unit if ds.get("PhotometricInterpretation") == "MONOCHROME1" else unit


def _first(value):
    return value[0] if isinstance(value, pydicom.multival.MultiValue) else value


class DicomReader:
    """index -> uint8 (channels, size, size) from a list of DICOM files; picklable for workers. Each
    file's header is checked (tags, `max_pixels`) again before its pixels are decoded."""

    def __init__(self, paths: list[Path], channels: int, size: int, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.paths, self.channels, self.size, self.max_pixels = list(paths), channels, size, max_pixels

    def __call__(self, i: int) -> torch.Tensor:
        path = self.paths[i]
        try:
            ds = _open(path, str(path), pixels=True)
            require_cap(header_numbers(ds, path, str(path)), path, str(path), PixelCap(self.max_pixels))
            pixels = unit_pixels(ds)
        except ValueError:
            raise
        except Exception as err:  # pydicom's decoders raise many kinds
            raise ValueError(f"{path}: undecodable DICOM pixels ({' '.join(str(err).split())[:100]})") from None
        image = torch.from_numpy(np.round(pixels * 255.0).astype(np.uint8))
        image = image[None] if image.ndim == 2 else image.permute(2, 0, 1)
        if image.shape[0] != self.channels:
            image = image.expand(3, -1, -1) if self.channels == 3 else image.float().mean(0, keepdim=True).round().byte()
        if tuple(image.shape[1:]) != (self.size, self.size):
            image = torch.nn.functional.interpolate(image[None].float(), size=(self.size, self.size),
                                                    mode="bilinear", antialias=True, align_corners=False)
            image = image[0].round().clamp(0, 255).to(torch.uint8)
        return image.contiguous()


def read_dicom_folder(root: str | Path, size: int, csv_file: str, channels: int, task: str,
                      label_names: list[str], path_column: str = "path", label_column: str = "label",
                      patient_column: str = "", cap: PixelCap | None = None) -> Source:
    """A folder of DICOM files and a CSV of labels, with the keys and rules of the `csv` source."""
    cap = cap or PixelCap()
    return read_csv_folder(root, size, csv_file, channels, task, label_names, path_column, label_column,
                           patient_column, check=partial(check_dicom, cap=cap),
                           reader=partial(DicomReader, max_pixels=cap.limit))
