"""ClassifierModule: per-task loss, and AUROC / accuracy per stage against scikit-learn."""
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from sklearn.metrics import accuracy_score, roc_auc_score
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules import ClassifierModule
from lightning_modules.tasks import loss


def labelled_set(task: str, num_outputs: int, n: int = 40):
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(n, 1, 16, 16, generator=generator)
    if task == "binary":
        labels = torch.arange(n) % 2
    elif task == "multiclass":
        labels = torch.arange(n) % num_outputs
    else:
        labels = (torch.rand(n, num_outputs, generator=generator) < 0.5).long()
        labels[0], labels[1] = 1, 0  # both values present for every label
    return images, labels


def quiet_trainer(**options) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=False, **options)


@pytest.mark.parametrize("task,num_outputs", [("binary", 1), ("multiclass", 3), ("multilabel", 4)])
def test_stage_metrics_match_sklearn(task, num_outputs):
    torch.manual_seed(0)
    images, labels = labelled_set(task, num_outputs)
    module = ClassifierModule("tiny_cnn", "random", task, num_outputs, in_chans=1)
    loader = DataLoader(TensorDataset(images, labels), batch_size=16)  # 3 batches: epoch-level accumulation
    for stage, run in [("val", quiet_trainer().validate), ("test", quiet_trainer().test)]:
        metrics = run(module, loader, verbose=False)[0]
        with torch.no_grad():
            logits = module.model.eval()(images)
        y = labels.numpy()
        if task == "binary":
            probs = torch.sigmoid(logits[:, 0]).numpy()
            auc, acc = roc_auc_score(y, probs), accuracy_score(y, probs >= 0.5)
        elif task == "multiclass":
            probs = torch.softmax(logits, dim=1).numpy()
            auc = roc_auc_score(y, probs, multi_class="ovr", average="macro")
            acc = accuracy_score(y, probs.argmax(1))
        else:
            probs = torch.sigmoid(logits).numpy()
            auc = roc_auc_score(y, probs, average="macro")
            acc = float(np.mean((probs >= 0.5) == y))
        assert metrics[f"{stage}_auc"] == pytest.approx(auc, abs=1e-5)
        assert metrics[f"{stage}_acc"] == pytest.approx(acc, abs=1e-6)


def test_losses_are_the_cross_entropies_of_each_layout():
    logits = torch.tensor([[0.3, -1.2, 2.0], [-0.5, 0.1, 0.4]])
    p = torch.sigmoid(logits[:, 0])
    y = torch.tensor([1, 0])
    assert loss("binary", logits[:, :1], y).item() == pytest.approx(
        -(np.log(p[0].item()) + np.log(1 - p[1].item())) / 2, rel=1e-5)
    soft = torch.softmax(logits, dim=1)
    assert loss("multiclass", logits, torch.tensor([2, 0])).item() == pytest.approx(
        -(np.log(soft[0, 2].item()) + np.log(soft[1, 0].item())) / 2, rel=1e-5)
    multi = torch.tensor([[1, 0, 1], [0, 0, 1]])
    sig = torch.sigmoid(logits)
    by_hand = -np.mean([np.log(sig[i, j].item()) if multi[i, j] else np.log(1 - sig[i, j].item())
                        for i in range(2) for j in range(3)])
    assert loss("multilabel", logits, multi).item() == pytest.approx(by_hand, rel=1e-5)


def test_training_improves_train_auc_on_a_learnable_set():
    torch.manual_seed(0)
    labels = torch.arange(64) % 2
    images = torch.rand(64, 1, 16, 16) * 0.5 + labels.view(-1, 1, 1, 1) * 0.5  # bright = positive
    loader = DataLoader(TensorDataset(images, labels), batch_size=16, shuffle=True)
    module = ClassifierModule("tiny_cnn", "random", "binary", 1, in_chans=1, lr=1e-2)
    trainer = quiet_trainer(max_epochs=3)
    trainer.fit(module, loader, loader)
    with torch.no_grad():
        probs = torch.sigmoid(module.model.eval()(images)[:, 0])
    assert trainer.callback_metrics["val_auc"].item() == pytest.approx(roc_auc_score(labels, probs), abs=1e-5)
    assert roc_auc_score(labels, probs) > 0.95
