"""Model kinds (design/model_kinds.py): which kind each zoo entry is, the roles each may take, its
hardening label and its identities, checked against the identity functions directly."""
import pytest

from experiments.design import identity
from experiments.design.config import ConfigError
from experiments.design.model_kinds import (AdversariallyTrained, Defended, Ensemble, External, Zoo, kind_of,
                                            network_key)
from experiments.design.scheduler import Scheduler
from experiments.preflight.facts import study_facts

ZOO = ("models=[{name: a}, {name: b, dev_set: d2}, {name: a_jpeg, defence: {name: jpeg, quality: 50}}, "
       "{name: a_adv, adversarial_training: {name: pgd, eps: 0.03}}, "
       "{name: a_adv_jpeg, adversarial_training: {name: pgd, eps: 0.03}, defence: {name: jpeg, quality: 50}}, "
       "{name: ens, ensemble: [a, b]}, "
       "{name: ext, external: {format: onnx, path: /nowhere/m.onnx, output: {kind: logits}}}]")


@pytest.fixture
def kinds(smoke_config, tmp_path):
    cfg = smoke_config(tmp_path, ZOO, "attacks=[{name: fgsm, eps: [0.02]}]")
    s = Scheduler(cfg, study_facts(cfg))
    return s, s.kinds


def test_each_entry_is_its_kind_and_takes_the_roles_it_can(kinds):
    _, k = kinds
    assert [type(k[n]) for n in ("a", "a_jpeg", "a_adv", "a_adv_jpeg", "ens", "ext")] == [
        Zoo, Defended, AdversariallyTrained, Defended, Ensemble, External]
    assert not k["ens"].target and k["ens"].gradients and k["ens"].member_names == ["a", "b"]
    assert k["ext"].target and not k["ext"].gradients and not k["ext"].default_surrogate
    assert [k[n].obtained for n in ("a", "a_jpeg", "ens", "ext")] == ["trained", "trained", "composed", "loaded"]
    assert k["ext"].trained_init is None and k["ens"].trained_init is None and k["a"].trained_init == "random"


def test_a_defended_adversarially_trained_model_names_both_and_trains_as_its_twin(kinds):
    s, k = kinds
    assert k["a_adv_jpeg"].hardening() == "pgd(eps=0.03) + jpeg(quality=50)"
    assert k["a_adv_jpeg"].training_attack == k["a_adv"].training_attack
    cfg = s.cfg
    f = s.facts
    assert k["a_adv_jpeg"].job_key(cfg, f) == identity.model_key(cfg, s.zoo["a_adv"], f)
    assert k["a_adv_jpeg"].network_key(cfg, f) == identity.digest(
        {"model": identity.model_key(cfg, s.zoo["a_adv"], f), "defence": {"name": "jpeg", "quality": 50}})
    assert k["ens"].job_key(cfg, f) == identity.digest(
        {"ensemble": [network_key(cfg, s.zoo["a"], f), network_key(cfg, s.zoo["b"], f)], "mode": "logits"})
    assert k["ext"].network_key(cfg, f) == identity.external_key(s.zoo["ext"], f)


def test_the_entry_keys_decide_the_kind_in_order():
    both = {"name": "x", "defence": {"name": "jpeg"}, "adversarial_training": {"name": "pgd"}}
    assert type(kind_of(both)) is Defended
    assert type(kind_of({"name": "x", "ensemble": [], "defence": None})) is Zoo  # unset keys do not count


def test_a_role_a_kind_cannot_take_is_one_line_naming_the_kind(smoke_config, tmp_path):
    with pytest.raises(ConfigError, match=r"^targets: 'ens' is an ensemble, which can only be a surrogate$"):
        smoke_config(tmp_path, ZOO, "targets=[ens]")
    with pytest.raises(ConfigError, match=r"^surrogates: 'ext' is an external onnx model, which gives no gradients"):
        smoke_config(tmp_path, ZOO, "surrogates=[ext]")
