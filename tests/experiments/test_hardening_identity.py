"""Identities of hardened models and ensembles: what a defence, adversarial training and ensemble
membership change, and what the scheduler trains."""
from experiments.design import identity
from experiments.design.model_kinds import network_key
from experiments.design.scheduler import Scheduler
from experiments.design.zoo import entry_params, hardening
from experiments.preflight.facts import study_facts

ZOO = ("models=[{name: a}, {name: b, dev_set: d2}, {name: a_jpeg, defence: {name: jpeg, quality: 50}}, "
       "{name: a_jpeg40, defence: {name: jpeg, quality: 40}}, "
       "{name: a_adv, adversarial_training: {name: pgd, eps: 0.03}}, {name: ens, ensemble: [a, b]}, "
       "{name: ens_loss, ensemble: [a, b], mode: loss}, {name: ens_ba, ensemble: [b, a]}]")


def scheduler(smoke_config, tmp_path, *overrides):
    cfg = smoke_config(tmp_path, ZOO, *overrides, "attacks=[{name: fgsm, eps: [0.02]}]")
    return Scheduler(cfg, study_facts(cfg))


def test_a_defended_model_shares_its_twins_training_but_not_its_sets_or_pairs(smoke_config, tmp_path):
    s = scheduler(smoke_config, tmp_path)
    zoo, cfg = s.zoo, s.cfg
    facts = s.facts
    assert identity.model_key(cfg, zoo["a_jpeg"], facts) == identity.model_key(cfg, zoo["a"], facts)
    assert identity.model_seed(0, zoo["a_jpeg"]) == identity.model_seed(0, zoo["a"])
    keys = {name: network_key(cfg, zoo[name], facts) for name in ("a", "a_jpeg", "a_jpeg40")}
    assert len(set(keys.values())) == 3  # the defence and its parameter are part of the network
    sets = {group.set.surrogate.name: group.set.key for group in s.groups}
    assert sets["a_jpeg"] != sets["a"]  # a set crafted through the defence is another set
    pairs = {(p.set.surrogate.name, p.target.name): p.key for group in s.groups for p in group.pairs}
    assert pairs["b", "a_jpeg"] != pairs["b", "a"]


def test_adversarial_training_is_its_own_training_with_its_own_seed(smoke_config, tmp_path):
    s = scheduler(smoke_config, tmp_path)
    zoo, cfg = s.zoo, s.cfg
    facts = s.facts
    assert identity.model_key(cfg, zoo["a_adv"], facts) != identity.model_key(cfg, zoo["a"], facts)
    assert identity.model_seed(0, zoo["a_adv"]) != identity.model_seed(0, zoo["a"])
    assert identity.model_identity(cfg, zoo["a_adv"], facts)["adversarial_training"] == {
        "name": "pgd", "eps": 0.03, "alpha": 0.005, "steps": 20, "quantize": False}  # defaults filled in
    spelled_out = scheduler(smoke_config, tmp_path, "models.4.adversarial_training.steps=20")
    assert identity.model_key(spelled_out.cfg, spelled_out.zoo["a_adv"], spelled_out.facts) == identity.model_key(
        cfg, zoo["a_adv"], facts)


def test_an_ensembles_identity_is_its_members_in_order_and_its_mode(smoke_config, tmp_path):
    s = scheduler(smoke_config, tmp_path)
    zoo, cfg = s.zoo, s.cfg
    keys = {name: network_key(cfg, zoo[name], s.facts) for name in ("ens", "ens_loss", "ens_ba")}
    assert len(set(keys.values())) == 3
    retrained = scheduler(smoke_config, tmp_path, "data.signal=0.5")  # members' data change
    assert network_key(retrained.cfg, retrained.zoo["ens"], retrained.facts) != keys["ens"]


def test_the_scheduler_trains_each_model_once(smoke_config, tmp_path):
    s = scheduler(smoke_config, tmp_path, "surrogates=[ens, ens_loss, a_jpeg]", "targets=[a, a_jpeg, a_adv]")
    trained = [(job.name, job.key) for job in s.model_jobs()]
    assert [name for name, _ in trained] == ["a", "a_adv", "b"]  # members for ensembles; a_jpeg is a
    assert len({key for _, key in trained}) == 3
    sets = {job.surrogate.name for job in s.set_jobs()}
    assert sets == {"ens", "ens_loss", "a_jpeg"}
    ens = next(job for job in s.set_jobs() if job.surrogate.name == "ens").surrogate
    assert [m.name for m in s.members(ens)] == ["a", "b"]


def test_targets_default_to_the_zoo_without_ensembles(smoke_config, tmp_path):
    s = scheduler(smoke_config, tmp_path, "surrogates=[ens]")
    assert {p.target.name for p in s.pair_jobs()} == {"a", "b", "a_jpeg", "a_jpeg40", "a_adv"}


def test_params_and_hardening_labels(smoke_config, tmp_path):
    zoo = scheduler(smoke_config, tmp_path).zoo
    assert entry_params(zoo["a_jpeg"]) == {"name": "a_jpeg", "arch": "tiny_cnn", "init": "random", "dev_set": "d1",
                                           "instance": 0, "defence.name": "jpeg", "defence.quality": 50}
    assert entry_params(zoo["ens_loss"]) == {"name": "ens_loss", "ensemble": "a,b", "mode": "loss",
                                             "arch": "tiny_cnn", "init": "random", "dev_set": "mixed"}
    assert entry_params(zoo["a"]) == {"name": "a", "arch": "tiny_cnn", "init": "random", "dev_set": "d1",
                                      "instance": 0}
    assert hardening(zoo["a_jpeg"]) == "jpeg(quality=50)" and hardening(zoo["a"]) == "none"
    assert hardening(zoo["a_adv"]) == "pgd(eps=0.03)"


def test_weight_checks_list_an_ensembles_members_not_the_ensemble(smoke_config, tmp_path):
    from experiments.preflight.weights import needed_files
    cfg = smoke_config(tmp_path, "models=[{name: e1, arch: efficientnet_lite0, init: imagenet}, "
                       "{name: e2, arch: efficientnet_lite0, init: imagenet, instance: 1}, {name: ens, ensemble: [e1, e2]}]")
    files, problems = needed_files(cfg)
    assert problems == [] and [f.models for f in files] == [["e1", "e2"]]
