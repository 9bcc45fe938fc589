import subprocess
import sys
import textwrap

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from attacks import CraftingCallback, IndexedDataset, craft

CFG = {"name": "ifgsm", "eps": 4 / 255, "alpha": 1 / 255, "steps": 4}


class Classifier(pl.LightningModule):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model(images)

    def predict_step(self, batch, batch_idx):
        return self(batch[0])

    def test_step(self, batch, batch_idx):
        self.log("mean_logit", self(batch[0]).mean())


def trainer(callback):
    return pl.Trainer(accelerator="cpu", devices=1, callbacks=[callback], logger=False,
                      enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)


@pytest.mark.parametrize("stage", ["predict", "test"])
def test_callback_crafts_the_set_in_sample_order(stage, make_case):
    model, images, labels = make_case("multiclass", n=10)
    loader = DataLoader(IndexedDataset(TensorDataset(images, labels)), batch_size=4, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    callback = CraftingCallback(CFG, "multiclass")
    getattr(trainer(callback), stage)(Classifier(model), loader)
    assert torch.equal(callback.indices, torch.arange(10))
    torch.testing.assert_close(callback.adversarial, craft(model, images, labels, CFG, "multiclass"),
                               atol=1e-6, rtol=0)


def test_callback_attacks_a_given_surrogate_on_unindexed_batches(make_case):
    target, images, labels = make_case("binary", n=6, seed=0)
    surrogate, _, _ = make_case("binary", seed=1)
    callback = CraftingCallback(CFG, "binary", surrogate=surrogate)
    trainer(callback).predict(Classifier(target), DataLoader(TensorDataset(images, labels), batch_size=4))
    torch.testing.assert_close(callback.adversarial, craft(surrogate, images, labels, CFG, "binary"),
                               atol=1e-6, rtol=0)


DDP_SCRIPT = """
import sys
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from attacks import CraftingCallback, IndexedDataset, craft

class Classifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    def forward(self, images):
        return self.model(images)
    def predict_step(self, batch, batch_idx):
        return self(batch[0])

cfg = {"name": "ifgsm", "eps": 4 / 255, "alpha": 1 / 255, "steps": 3}
generator = torch.Generator().manual_seed(0)
images, labels = torch.rand(11, 3, 4, 4, generator=generator), torch.randint(0, 3, (11,), generator=generator)
module, callback = Classifier(), CraftingCallback(cfg, "multiclass")
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", callbacks=[callback], logger=False,
                     enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
trainer.predict(module, DataLoader(IndexedDataset(TensorDataset(images, labels)), batch_size=3))
if trainer.global_rank == 0:
    expected = craft(module.model, images, labels, cfg, "multiclass")
    assert torch.equal(callback.indices, torch.arange(11)), callback.indices
    assert torch.allclose(callback.adversarial, expected, atol=1e-6, rtol=0)
    print("DDP-OK")
"""


@pytest.mark.slow
def test_callback_under_two_process_ddp_gathers_every_shard_in_order(tmp_path):
    script = tmp_path / "ddp_craft.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "DDP-OK" in result.stdout
