"""The one way medtransfer writes a file that must be complete or absent: into a temporary file beside it,
renamed into place once written (a rename within a folder is atomic)."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def replaced(path: str | Path, *, prefix: str | None = None, suffix: str = ".tmp",
             temporary: str | Path | None = None) -> Iterator[Path]:
    """Yield a temporary file beside `path`, renamed to `path` when the block ends without error and removed
    whatever happens otherwise. The file is made empty and owner-only by `mkstemp` (named `prefix` (default
    `<name>.`), random part, `suffix`), unless the caller names it `temporary` and creates it itself."""
    path = Path(path)
    if temporary is None:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}." if prefix is None else prefix,
                                    suffix=suffix)
        os.close(fd)
        temporary = name
    temporary = Path(temporary)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.remove(temporary)
