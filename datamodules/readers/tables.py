"""CSV label tables: read with a one-line error naming the file and any missing column."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .images import require_file


def read_table(path: Path, required: list[str]) -> pd.DataFrame:
    require_file(path, "label file")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:
        raise ValueError(f"{path}: unreadable CSV ({' '.join(str(err).split())[:120]})") from None
    for column in required:
        if column not in table.columns:
            raise ValueError(f"{path}: required column {column!r} missing (columns: {', '.join(table.columns)})")
    if table.empty:
        raise ValueError(f"{path}: no rows")
    return table


def row_ref(path: Path, i: int) -> str:
    """'file, row k' with k the 1-based line number in the file (the header is line 1)."""
    return f"{path}, line {i + 2}"
