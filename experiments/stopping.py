"""A clean stop on SIGTERM, as on Ctrl-C, and a one-line stop during start-up.

Batch schedulers (SLURM at the time limit), container runtimes (a Kubernetes eviction) and service
managers (`systemctl stop`) send SIGTERM and, after a grace period, SIGKILL. While a command runs,
the first SIGTERM is raised as a KeyboardInterrupt in the main thread, so every part of a study
stops as it does on Ctrl-C: open MLflow runs end KILLED, follower processes and Ray tasks are
stopped, temporary files are removed. Lightning, which installs its own SIGTERM handler during a fit
or predict, calls the handler it found in place, so the stop reaches fits and predicts too. Later
SIGTERMs are ignored while the first one's clean-up runs.

During start-up (`exit_at_once`, while the command imports torch, Lightning and MLflow) nothing has
been written, and an exception raised inside an import can leave a library half-imported, so there a
Ctrl-C or SIGTERM ends the process at once with the same one line.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager

INTERRUPTED, TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM
KEPT = "finished work is kept, run the same command again to resume"


def stopped_line(terminated: bool) -> str:
    return f"medtransfer: {'stopped by SIGTERM' if terminated else 'interrupted'}; {KEPT}"


@contextmanager
def exit_at_once():
    """While active, SIGINT and SIGTERM print the one line and end the process (exit 130 or 143) at
    once; a signal the parent set to be ignored stays ignored."""
    def leave(signum, frame) -> None:
        os.write(2, (stopped_line(signum == signal.SIGTERM) + "\n").encode())
        os._exit(TERMINATED if signum == signal.SIGTERM else INTERRUPTED)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, leave)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class StopSignals:
    """While active (a context), SIGTERM raises KeyboardInterrupt once; `exit_status()` and `reason()`
    tell a SIGTERM from a Ctrl-C afterwards."""

    def __init__(self):
        self.terminated = False
        self.previous = None

    def _on_sigterm(self, signum, frame) -> None:
        if not self.terminated:
            self.terminated = True
            raise KeyboardInterrupt

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self.previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)

    def exit_status(self) -> int:
        return TERMINATED if self.terminated else INTERRUPTED

    def line(self) -> str:
        return stopped_line(self.terminated)
