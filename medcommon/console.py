"""Console output: third-party chatter off, warnings kept, one progress bar per stage (on a terminal; one
line per stage elsewhere)."""
from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from contextlib import contextmanager
from typing import Iterable, Iterator

import pytorch_lightning as pl
from tqdm.auto import tqdm

# Info-level loggers that print advertisements ("Tip: try litlogger/litmodels"), device banners and
# per-run "View run at" lines; their warnings and errors still show.
CHATTY_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric", "mlflow")
# Warnings about Lightning's own code (a deprecation) or our use of it (predict batches are numbered
# by our own writer, `attacks.BatchGather`), which users can neither act on nor avoid.
INTERNAL_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                     r"Couldn't infer the batch indices fetched from your dataloader")
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"  # MLflow's artifact-download bars, read at each download


@contextmanager
def quiet_third_party(verbose: bool = False) -> Iterator[None]:
    """While it is open: info-level output of Lightning and MLflow and MLflow's artifact-download
    bars (a reused model's checkpoint) silenced, their warnings (and ours) kept; `verbose` leaves
    them as they are. The loggers' levels, the warning filters and the variable are put back after."""
    if verbose:
        yield
        return
    loggers = {name: logging.getLogger(name) for name in CHATTY_LOGGERS}
    levels = {name: logger.level for name, logger in loggers.items()}
    bars = os.environ.get(PROGRESS_BAR)
    try:
        with warnings.catch_warnings():
            os.environ[PROGRESS_BAR] = "false"
            for logger in loggers.values():
                logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
            for message in INTERNAL_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for name, logger in loggers.items():
            logger.setLevel(levels[name])
        if bars is None:
            os.environ.pop(PROGRESS_BAR, None)
        else:
            os.environ[PROGRESS_BAR] = bars


def terminal_bar(**settings) -> tqdm | StageLine:
    """A tqdm bar that redraws itself on a terminal; when stderr is not one (a log file, a pipe), a
    `StageLine`, so no carriage return or escape code reaches it."""
    if sys.stderr.isatty():
        return tqdm(**settings, dynamic_ncols=True)
    return StageLine(**settings)


class StageLine:
    """A stage's progress as one line on stderr, written when the stage ends (none if it fails):
    `<desc>: <done>/<total> <unit> (<postfix>) in <seconds> s`. Takes the tqdm calls the bars use."""

    def __init__(self, iterable: Iterable | None = None, desc: str = "", total: int | None = None,
                 unit: str = "it", **_):
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.n, self.postfix, self.started, self.closed = 0, "", time.monotonic(), False

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.n += 1

    def __enter__(self) -> StageLine:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
        self.closed = True

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            done = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
            extra = f" ({self.postfix})" if self.postfix else ""
            print(f"{self.desc}: {done} {self.unit}{extra} in {time.monotonic() - self.started:.1f} s",
                  file=sys.stderr, flush=True)


def stage_bar(items: Iterable, desc: str, total: int | None = None, unit: str = "it") -> Iterator:
    """`items` with a progress bar for one stage; nested inside an outer bar it disappears when done."""
    return terminal_bar(iterable=items, desc=desc, total=total, unit=unit, leave=None)


class TrainingBar(pl.Callback):
    """One bar per trained model: epochs done of `max_epochs`, with the latest validation AUC
    (use with the Trainer's own progress bar off)."""

    def __init__(self, name: str, max_epochs: int):
        self.name, self.max_epochs, self.bar = name, max_epochs, None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.bar = terminal_bar(total=self.max_epochs, desc=f"training {self.name}", unit="epoch", leave=None)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is not None:
            val_auc = trainer.callback_metrics.get("val_auc")
            if val_auc is not None:
                self.bar.set_postfix(val_auc=f"{float(val_auc):.3f}", refresh=False)
            self.bar.update()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.bar is not None:  # as a failed stage: a terminal's bar goes, no line is written
            self.bar.__exit__(type(exception), exception, None)
            self.bar = None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
