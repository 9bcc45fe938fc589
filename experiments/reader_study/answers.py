"""The answers of a reader study: one JSON line per answer, appended and synced to disk before the
reader's browser is told it was taken, so a closed browser or a killed server loses nothing."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pandas as pd

COLUMNS = ["reader", "trial", "attack", "eps", "surrogate", "seed", "set_key", "sample", "attacked",
           "choice", "picked", "correct", "repeat_of", "answered_at"]


class AnswerStore:
    """Append-only answers in `path`. A line cut short by a crash (never acknowledged to a reader,
    who sends it again) is dropped when the store is opened."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.records: list[dict] = []
        if self.path.exists():
            data = self.path.read_bytes()
            whole = data[:data.rfind(b"\n") + 1]
            if len(whole) != len(data):
                with open(self.path, "r+b") as file:
                    file.truncate(len(whole))
                    os.fsync(file.fileno())
            self.records = [self._record(number, line) for number, line in enumerate(whole.splitlines(), 1)
                            if line.strip()]
        self.counts: dict[str, int] = {}
        for record in self.records:
            self.counts[record["reader"]] = self.counts.get(record["reader"], 0) + 1

    def _record(self, number: int, line: bytes) -> dict:
        """One stored answer, checked to be a record of every column (one line naming the file if not)."""
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not (isinstance(record, dict) and set(record) == set(COLUMNS) and isinstance(record["reader"], str)
                and isinstance(record["trial"], int)):
            raise ValueError(f"{self.path}: line {number} is not an answer record (the file was changed)")
        return record

    def answered(self, reader: str) -> int:
        """How many trials `reader` has answered (their next trial's index)."""
        return self.counts.get(reader, 0)

    def append(self, record: dict) -> None:
        """Store one answer durably; it must be the reader's next trial."""
        record = {c: record[c] for c in COLUMNS}
        with self.lock:
            if record["trial"] != self.answered(record["reader"]):
                raise ValueError(f"reader {record['reader']}: trial {record['trial']} is not the next one")
            new = not self.path.exists()
            with open(self.path, "ab") as file:
                file.write((json.dumps(record) + "\n").encode())
                file.flush()
                os.fsync(file.fileno())
            if new:  # the file's name is durable too
                directory = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
            self.records.append(record)
            self.counts[record["reader"]] = record["trial"] + 1

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.records, columns=COLUMNS)
