"""A full disk or a read-only folder, named: one line saying which folder ran out of space or cannot
be written, and what the study was writing there (`writing`), instead of a traceback.

The study's writes are wrapped where they happen (data cache, adversarial sets, report, its copy in
the study run); around the whole study, `store_writes` names the tracking store for SQLite's own
errors and the run artifacts for the rest. The innermost wrap names the error; the runs open at the
time end FAILED, so no run is FINISHED with incomplete artifacts, and a rerun redoes them.
"""
from __future__ import annotations

import errno
from contextlib import contextmanager
from pathlib import Path

DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "not permitted"}
SQLITE_ERRORS = {"database or disk is full": "no space left on the device",
                 "attempt to write a readonly database": "read-only database",
                 "unable to open database file": "cannot open the database file"}


class WriteFailed(Exception):
    """A write the study could not make; str() is one line naming the folder, the reason and what."""

    def __init__(self, folder: Path | str, reason: str, what: str):
        super().__init__(f"{folder}: {reason} while writing {what}; make room (or make it writable) and run the "
                         "same command again: finished work is kept")


def _reason(error: BaseException) -> str | None:
    """Why a write failed, when a disk or permission problem is the cause, else None."""
    for cause in _chain(error):
        if isinstance(cause, OSError) and cause.errno in DISK_ERRORS:
            return DISK_ERRORS[cause.errno]
        for text, reason in SQLITE_ERRORS.items():
            if text in str(cause):
                return reason
    return None


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


@contextmanager
def writing(folder: Path | str, what: str):
    """Turn a disk-full or read-only error raised inside into WriteFailed naming `folder` and `what`."""
    try:
        yield
    except WriteFailed:
        raise
    except Exception as error:
        reason = _reason(error)
        if reason is None:
            raise
        raise WriteFailed(folder, reason, what) from error


@contextmanager
def store_writes(database: Path | None, artifacts: Path | None):
    """Around a whole study: SQLite's disk errors name the tracking store, any other disk error the
    file it names, else the run artifacts folder (model checkpoints, predictions, logged files)."""
    try:
        yield
    except WriteFailed:
        raise
    except Exception as error:
        reason = _reason(error)
        if reason is None:
            raise
        if database is not None and any(text in str(e) for e in _chain(error) for text in SQLITE_ERRORS):
            raise WriteFailed(database, reason, "the tracking store") from error
        named = next((e.filename for e in _chain(error) if isinstance(e, OSError) and e.filename), None)
        raise WriteFailed(Path(named).parent if named else artifacts or "the run artifacts", reason,
                          "run artifacts (model checkpoints, pair predictions)") from error
