"""The attacker's target and norm are part of a set's identity; configs that do not name them (or name
the defaults) keep the identities they had before the keys existed."""
import pytest

from experiments.design import identity
from experiments.design.scheduler import Scheduler
from experiments.preflight.facts import study_facts

SMOKE_ATTACKS = "attacks=[{name: fgsm, eps: [0.02]}, {name: ifgsm, eps: [0.02], params: {alpha: 0.005, steps: 5}}]"
DEFAULTS_NAMED = ("attacks=[{name: fgsm, eps: [0.02], target: untargeted, norm: linf}, {name: ifgsm, eps: [0.02], "
                  "params: {alpha: 0.005, steps: 5}, target: untargeted, norm: linf}]")
# The settings as the code before `target` and `norm` named them: every parameter of the attack with
# its default filled in, and eps (spelled out here, not computed by attacks.attack_params).
EARLIER_SETTINGS = [{"name": "fgsm", "eps": 0.02, "quantize": False},
                    {"name": "ifgsm", "eps": 0.02, "alpha": 0.005, "steps": 5, "quantize": False}]


def set_keys(cfg) -> dict:
    return {(job.surrogate.name, job.setting["name"]): job.key
            for job in Scheduler(cfg, study_facts(cfg)).set_jobs()}


def test_the_defaults_keep_the_earlier_settings_and_set_keys(smoke_config, tmp_path):
    plain, named = smoke_config(tmp_path, SMOKE_ATTACKS), smoke_config(tmp_path, DEFAULTS_NAMED)
    assert identity.attack_grid(plain) == identity.attack_grid(named) == EARLIER_SETTINGS
    assert set_keys(plain) == set_keys(named)
    assert identity.study_key(plain, study_facts(plain)) == identity.study_key(named, study_facts(named))
    # the key the earlier code computes from the earlier setting
    for job in Scheduler(plain, study_facts(plain)).set_jobs():
        earlier = next(s for s in EARLIER_SETTINGS if s["name"] == job.setting["name"])
        # a plain trained surrogate's network identity is its model key
        assert job.key == identity.digest({"surrogate": job.surrogate.key, "attack": earlier, "seed": job.seed,
                                           "precision": "fp32", "channels_last": False})


@pytest.mark.parametrize("threat", ["target: random", "target: least_likely", "target: '1'", "norm: l2"])
def test_target_and_norm_change_exactly_the_sets_they_craft(smoke_config, tmp_path, threat):
    before = set_keys(smoke_config(tmp_path, SMOKE_ATTACKS))
    changed_ifgsm = SMOKE_ATTACKS.replace("steps: 5}", "steps: 5}, " + threat)
    after = set_keys(smoke_config(tmp_path, changed_ifgsm))
    assert {what for what in after if after[what] != before[what]} == {("a", "ifgsm"), ("b", "ifgsm")}
    setting = next(s for s in identity.attack_grid(smoke_config(tmp_path, changed_ifgsm)) if s["name"] == "ifgsm")
    key, value = threat.split(": ")
    assert str(setting[key]) == value.strip("'")


def test_each_target_mode_and_norm_is_its_own_set(smoke_config, tmp_path):
    keys = set()
    for threat in ["", ", target: random", ", target: least_likely", ", norm: l2", ", norm: l2, target: random"]:
        keys.add(set_keys(smoke_config(tmp_path, SMOKE_ATTACKS.replace("steps: 5}", "steps: 5}" + threat)))[
            ("a", "ifgsm")])
    assert len(keys) == 5
