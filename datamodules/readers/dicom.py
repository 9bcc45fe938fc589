"""DICOM files (one image per file) with a CSV of labels, through pydicom.

Pixels to [0, 1]: the modality LUT or rescale (slope, intercept) first; then the first VOI LUT of
the file, else its first window (centre, width; the standard's linear function), else the range
the stored bits and the rescale allow; MONOCHROME1 is inverted (bright = dense, as in MONOCHROME2).
Colour files (3 samples per pixel) are scaled by their bit depth.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder

from .csv_folder import read_csv_folder
from .source import Source


def _open(path: Path, where: str, pixels: bool):
    try:
        return pydicom.dcmread(path, defer_size=None if pixels else "1 KB")
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as err:
        raise ValueError(f"{where}: {path}: not a readable DICOM file ({' '.join(str(err).split())[:100]})") from None


def check_dicom(path: Path, where: str) -> None:
    """A single-frame DICOM image whose pixels this installation can decode (header and lengths only)."""
    if not path.is_file():
        raise FileNotFoundError(f"{where}: DICOM file {path} not found")
    ds = _open(path, where, pixels=False)
    if "PixelData" not in ds:
        raise ValueError(f"{where}: {path}: no pixel data (a DICOM {ds.get('Modality', 'object')} without an image)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ValueError(f"{where}: {path}: multi-frame DICOM ({frames} frames); one image per file is read")
    syntax = getattr(ds.get("file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        if not get_decoder(syntax).is_available:
            raise ValueError(f"{where}: {path}: compressed transfer syntax {syntax.name}, and no decoder for it "
                             "is installed (pylibjpeg or GDCM plugins decode it)")
    elif "Rows" in ds and "Columns" in ds:
        needed = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
        raw = ds.get_item("PixelData")  # the raw element: its length without reading the pixels
        stored = raw.length if hasattr(raw, "length") else len(raw.value)
        if stored < needed:
            raise ValueError(f"{where}: {path}: truncated pixel data ({stored} of {needed} bytes)")


def unit_pixels(ds) -> np.ndarray:
    """(H, W) or (H, W, 3) float64 in [0, 1] (see the module docstring)."""
    raw = ds.pixel_array
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)))
    if int(ds.get("SamplesPerPixel", 1)) == 3:
        return np.clip(raw.astype(np.float64) / (2 ** bits - 1), 0.0, 1.0)
    values = apply_modality_lut(raw, ds).astype(np.float64)
    if "VOILUTSequence" in ds:
        out_bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        unit = apply_voi_lut(values, ds, index=0, prefer_lut=True).astype(np.float64) / (2 ** out_bits - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        centre, width = (float(_first(ds.WindowCenter)), float(_first(ds.WindowWidth)))
        unit = ((values - (centre - 0.5)) / max(width - 1.0, 1e-9) + 0.5)  # the standard's linear window
    else:
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        low, high = sorted((low * slope + intercept, high * slope + intercept))
        unit = (values - low) / (high - low)
    unit = np.clip(unit, 0.0, 1.0)
    return 1.0 - unit if ds.get("PhotometricInterpretation") == "MONOCHROME1" else unit


def _first(value):
    return value[0] if isinstance(value, pydicom.multival.MultiValue) else value


class DicomReader:
    """index -> uint8 (channels, size, size) from a list of DICOM files; picklable for workers."""

    def __init__(self, paths: list[Path], channels: int, size: int):
        self.paths, self.channels, self.size = list(paths), channels, size

    def __call__(self, i: int) -> torch.Tensor:
        path = self.paths[i]
        try:
            pixels = unit_pixels(_open(path, str(path), pixels=True))
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
                      patient_column: str = "") -> Source:
    """A folder of DICOM files and a CSV of labels, with the keys and rules of the `csv` source."""
    return read_csv_folder(root, size, csv_file, channels, task, label_names, path_column, label_column,
                           patient_column, check=check_dicom, reader=DicomReader)
