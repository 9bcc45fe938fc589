"""Console output: third-party chatter off, warnings kept, one progress bar per stage."""
from __future__ import annotations

import logging
import os
import warnings
from typing import Iterable, Iterator

import pytorch_lightning as pl
from tqdm.auto import tqdm

# Info-level loggers that print advertisements ("Tip: try litlogger/litmodels"), device banners and
# per-run "View run at" lines; their warnings and errors still show.
CHATTY_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric", "mlflow")
# Deprecations inside Lightning's own code, which users can neither act on nor avoid.
INTERNAL_DEPRECATIONS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)


def quiet_third_party() -> None:
    """Silence info-level output of Lightning and MLflow and MLflow's artifact-download bars (a
    reused model's checkpoint); keep their warnings (and ours)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in INTERNAL_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=message)


def stage_bar(items: Iterable, desc: str, total: int | None = None, unit: str = "it") -> Iterator:
    """`items` with a progress bar for one stage; nested inside an outer bar it disappears when done."""
    return tqdm(items, desc=desc, total=total, unit=unit, leave=None, dynamic_ncols=True)


class TrainingBar(pl.Callback):
    """One bar per trained model: epochs done of `max_epochs`, with the latest validation AUC
    (use with the Trainer's own progress bar off)."""

    def __init__(self, name: str, max_epochs: int):
        self.name, self.max_epochs, self.bar = name, max_epochs, None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.bar = tqdm(total=self.max_epochs, desc=f"training {self.name}", unit="epoch", leave=None,
                            dynamic_ncols=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is not None:
            val_auc = trainer.callback_metrics.get("val_auc")
            if val_auc is not None:
                self.bar.set_postfix(val_auc=f"{float(val_auc):.3f}", refresh=False)
            self.bar.update()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
