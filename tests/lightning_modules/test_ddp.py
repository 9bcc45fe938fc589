"""Two-process CPU DDP (gloo) trains to the same validation AUC as one process."""
import pytest
import pytorch_lightning as pl
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules import ClassifierModule

TOLERANCE = 1e-4  # float summation order differs between one process and two


def train(strategy: str, devices: int):
    """Full-batch training on a set that holds each image twice, side by side: the distributed sampler
    deals indices alternately, so each of the two processes gets every image once and its BatchNorm
    statistics and mean gradient equal those of one process over the whole set (DDP averages the
    gradients). The validation set is split normally, so the synchronised AUC must cover both halves."""
    torch.manual_seed(0)
    labels = (torch.arange(48) // 2) % 2  # 0 0 1 1 ...: both classes in each validation shard
    images = torch.rand(48, 1, 16, 16) * 0.98 + labels.view(-1, 1, 1, 1) * 0.02  # weak: AUC < 1
    train_set = TensorDataset(images[:16].repeat_interleave(2, dim=0), labels[:16].repeat_interleave(2))
    val_set = TensorDataset(images[32:], labels[32:])  # even size: no padding by the distributed sampler
    module = ClassifierModule("tiny_cnn", "random", "binary", 1, in_chans=1, lr=1e-2)
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy, max_epochs=2,
                         logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0)
    trainer.fit(module, DataLoader(train_set, batch_size=32), DataLoader(val_set, batch_size=4))
    with torch.no_grad():
        probs = torch.sigmoid(module.model.eval()(images[32:])[:, 0])
    return trainer.callback_metrics["val_auc"].item(), probs, labels[32:]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process():
    single_logged, single_probs, val_labels = train("auto", 1)
    ddp_logged, ddp_probs, _ = train("ddp_spawn", 2)
    full = roc_auc_score(val_labels, ddp_probs)
    shards = [roc_auc_score(val_labels[rank::2], ddp_probs[rank::2]) for rank in (0, 1)]
    assert 0.5 < full < 1 and all(abs(shard - full) > 0.01 for shard in shards)  # a shard's AUC would show
    assert ddp_logged == pytest.approx(full, abs=1e-6)  # synced over the whole validation set
    assert single_logged == pytest.approx(roc_auc_score(val_labels, single_probs), abs=1e-6)
    assert ddp_logged == pytest.approx(single_logged, abs=TOLERANCE)
