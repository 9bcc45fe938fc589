"""The attacker's settings (`attacks[i].target`, `attacks[i].norm`) and the targets stored with a set:
a setting an attack cannot do is one line through the CLI before any work; stored targets that are not
one whole number of at least -1 per image are one `SetError` line naming the file."""
import hashlib
import io

import pytest
import torch

from attacks import AdversarialSetCache
from attacks.cache import MAGIC, VERSION, SetError, encode
from attacks.targets import targeted_hits
from experiments.cli import main
from experiments.design.config import preset_path

REFUSED = [
    pytest.param(["attacks=[{name: mifgsm, eps: [0.02], norm: l2}]"], "attacks[0].norm: l2;",
                 id="norm the attack lacks"),
    pytest.param(["attacks=[{name: fgsm, eps: [0.02]}, {name: pgd, eps: [0.5], norm: l1}]"], "attacks[1].norm: l1;",
                 id="unknown norm"),
    pytest.param(["attacks=[{name: pgd, eps: [0.02], target: sideways}]"], "attacks[0].target: sideways;",
                 id="target naming no class"),
    pytest.param(["attacks=[{name: pgd, eps: [0.02], target: '2'}]"], "attacks[0].target: 2;",
                 id="class index beyond a binary task"),
    pytest.param(["attacks=[{name: pgd, eps: [0.02], target: '-1'}]"], "attacks[0].target: -1;",
                 id="negative class index"),
    pytest.param(["attacks=[{name: pgd, eps: [0.02], target: ''}]"], "attacks[0].target: ;", id="empty target"),
    pytest.param(["attacks=[{name: pgd, eps: [-1.0], norm: l2}]"], "eps=-1.0", id="negative L2 budget"),
    pytest.param(["attacks=[{name: pgd, eps: [.inf], norm: l2}]"], "eps=inf", id="infinite L2 budget"),
    pytest.param(["attacks=[{name: pgd, eps: [2.0]}]"], "eps=2.0", id="L-inf budget above one"),
]


@pytest.mark.parametrize("overrides, culprit", REFUSED)
def test_an_attacker_setting_the_attack_cannot_do_is_one_line_before_any_work(overrides, culprit, tmp_path, capsys):
    store = tmp_path / "mlflow.db"
    code = main(["run", "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{store}",
                 f"output_dir={tmp_path / 'out'}", *overrides])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1 and culprit in err[0] and "Traceback" not in err[0], err
    assert not store.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("override", ["attacks=[{name: pgd, eps: [2.5], norm: l2, target: tumour}]",
                                      "attacks=[{name: fgsm, eps: [1.0], norm: l2, target: least_likely}]",
                                      "attacks=[{name: ifgsm, eps: [0.01], target: '0'}]"])
def test_settings_an_attack_can_do_are_accepted(override, tmp_path, capsys):
    assert main(["plan", "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{tmp_path / 'm.db'}",
                 f"output_dir={tmp_path / 'out'}", override]) == 0


CLEAN = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))


def blake(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


@pytest.mark.parametrize("targets", [torch.tensor([0, 1, -2]), torch.tensor([0.0, 1.0, 1.0]), torch.tensor([0, 1]),
                                     torch.tensor([[0, 1, 1]])], ids=["below -1", "float", "too few", "2-d"])
def test_stored_targets_that_are_not_one_per_image_are_one_line(tmp_path, targets):
    cache = AdversarialSetCache(tmp_path)
    path = cache.path("k")
    record = io.BytesIO()  # a record as `encode` writes it, the hostile targets in place of real ones
    torch.save({**encode(CLEAN, CLEAN.clamp(0.1, 0.9)), "target": targets}, record)
    header = MAGIC + VERSION.to_bytes(2, "little") + (0).to_bytes(8, "little", signed=True)
    data = record.getvalue()
    path.write_bytes(header + blake(header) + len(data).to_bytes(8, "little") + blake(data) + data)
    with pytest.raises(SetError) as err:
        cache.targets("k", [CLEAN])
    assert str(err.value).startswith(f"{path}: batch 0: ") and "\n" not in str(err.value)
    with pytest.raises(SetError):
        cache.load("k", [CLEAN])


def test_a_set_with_targets_in_some_batches_only_is_one_line(tmp_path):
    cache = AdversarialSetCache(tmp_path)
    cache.ensure("k", 0, lambda write: [write(CLEAN, CLEAN, torch.tensor([1, 0, -1])), write(CLEAN, CLEAN)])
    with pytest.raises(SetError, match="some batches hold targets, others not"):
        cache.targets("k", [CLEAN, CLEAN])


def test_a_target_outside_the_task_is_refused_when_scored():
    labels, scores = torch.tensor([0, 1, 2]), torch.eye(3)
    with pytest.raises(ValueError, match="targets"):
        targeted_hits("multiclass", labels, scores, torch.tensor([1, 2, 3]))
