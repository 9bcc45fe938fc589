"""Configs built or changed in Python get the checks the command line gets (issue 34): one line naming
the key and the value, before anything is written; overrides as a string, a list, a mapping or on a
preset name give the config the same command-line overrides give."""
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

import experiments.study
from experiments import load_config, plan_study, run_study
from experiments.cli import main
from experiments.design.config import (AttackConfig, ConfigError, ModelConfig, StudyConfig, checked_config,
                                       preset_path)
from experiments.design.scheduler import Scheduler
from experiments.preflight import study_plan
from experiments.preflight.facts import study_facts

SMOKE = preset_path("smoke")


@pytest.fixture(scope="module")
def earlier_study(tmp_path_factory):
    """A folder holding a real MLflow store with one finished study run and that study's results.csv."""
    root = tmp_path_factory.mktemp("earlier")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("smoke"), tags={"kind": "study"})
    client.set_terminated(run.info.run_id)
    report = root / "out" / "smoke" / "report"
    report.mkdir(parents=True)
    (report / "results.csv").write_text("seed,surrogate,target,attack,eps,auc_clean\n0,a,b,fgsm,0.02,0.9\n")
    return SimpleNamespace(root=root, uri=uri, client=client)


def files(root):
    """Every file and folder under `root` with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


CHANGES = [
    pytest.param({"surrogates": ["zz"]}, "surrogates[0]: unknown model 'zz'; valid: a, b", id="unknown surrogate"),
    pytest.param({"targets": ["a", "zz"]}, "targets[1]: unknown model 'zz'", id="unknown target"),
    pytest.param({"pairs": "whitebx"}, "pairs: unknown 'whitebx'; valid: all, whitebox, transfer", id="pair mode typo"),
    pytest.param({"surrogates": ["a"], "targets": ["b"], "pairs": "whitebox"}, "pairs: 'whitebox' selects no "
                 "(surrogate, target) pair of surrogates ['a'] and targets ['b']", id="pair mode selecting nothing"),
    pytest.param({"train.max_epochs": 0}, "train.max_epochs: 0; must be at least 1", id="no epochs"),
    pytest.param({"data.batch_size": -3}, "data.batch_size: -3; must be at least 1", id="negative batch"),
    pytest.param({"seeds": [0, -1]}, "seeds[1]: -1; must be a whole number", id="negative seed"),
    pytest.param({"attacks": [{"name": "zz", "eps": [0.01]}]}, "attacks[0].name: unknown attack 'zz'; valid: difgsm",
                 id="unknown attack"),
    pytest.param({"attacks": [{"name": "fgsm", "eps": [1.5]}]}, "attacks[0]: attack fgsm: eps=1.5 must be",
                 id="epsilon above one"),
    pytest.param({"attacks": [{"name": "fgsm", "epz": [0.01]}]}, "attacks[0].epz: Key 'epz' not in 'AttackConfig'. "
                 "Did you mean: 'eps'?", id="attack key typo"),
    pytest.param({"attacks": []}, "attacks: empty", id="empty grid"),
    pytest.param({"attacks": [{"name": "fgsm", "eps": []}]}, "attacks[0].eps: empty", id="no epsilon"),
    pytest.param({"attacks": ["fgsm"]}, "attacks[0]: 'fgsm'; each item must be a mapping", id="attack as a name"),
    pytest.param({"models": [{"name": "a", "arch": "no_such_net"}]}, "models.a.arch: unknown architecture "
                 "'no_such_net'", id="unknown architecture"),
]


@pytest.mark.parametrize("entry", ["run_study", "plan_study", "plan"])
@pytest.mark.parametrize("changes, culprit", CHANGES)
def test_a_loaded_config_changed_in_python_is_refused_before_anything_is_written(entry, changes, culprit,
                                                                                 earlier_study):
    cfg = load_config(SMOKE, [f"tracking.uri={earlier_study.uri}", f"output_dir={earlier_study.root / 'out'}"])
    for key, value in changes.items():  # as `cfg.surrogates = ["zz"]`, `cfg.train.max_epochs = 0` do
        OmegaConf.update(cfg, key, value, merge=False)
    before = files(earlier_study.root)
    call = {"run_study": lambda: run_study(cfg), "plan_study": lambda: plan_study(cfg),
            "plan": lambda: study_plan(cfg)}[entry]
    with pytest.raises(ConfigError) as refused:
        call()
    message = str(refused.value)
    assert len(message.splitlines()) == 1 and message.startswith(culprit)
    assert files(earlier_study.root) == before  # no results.csv overwritten, no store change, no folder
    experiment = earlier_study.client.get_experiment_by_name("smoke")
    assert len(earlier_study.client.search_runs([experiment.experiment_id])) == 1


def test_python_assignments_are_refused_like_the_changes_above(earlier_study):
    """The same changes as plain attribute assignments (what a launcher script writes)."""
    cfg = load_config(SMOKE, [f"tracking.uri={earlier_study.uri}", f"output_dir={earlier_study.root / 'out'}"])
    cfg.surrogates = ["zz"]
    with pytest.raises(ConfigError, match=r"^surrogates\[0\]: unknown model 'zz'"):
        run_study(cfg)
    cfg.surrogates, cfg.pairs = [], "whitebx"
    with pytest.raises(ConfigError, match=r"^pairs: unknown 'whitebx'"):
        run_study(cfg)
    cfg.pairs, cfg.train.max_epochs = "all", 0
    with pytest.raises(ConfigError, match=r"^train.max_epochs: 0; must be at least 1"):
        run_study(cfg)


def test_an_unchanged_loaded_config_passes_the_same_check():
    cfg = load_config(SMOKE)
    assert OmegaConf.to_container(checked_config(cfg)) == OmegaConf.to_container(cfg)


def test_assigning_plain_dicts_and_lists_works(tmp_path):
    cfg = load_config(SMOKE, [f"output_dir={tmp_path}"])
    cfg.attacks = [{"name": "fgsm", "eps": [0.01, 0.03]}]
    cfg.attacks.append({"name": "pgd", "eps": [0.02], "params": {"steps": 3}})
    cfg.models = [*cfg.models, {"name": "c", "dev_set": "d2/2"}]
    checked = checked_config(cfg)
    assert OmegaConf.to_container(checked.attacks) == [
        {"name": "fgsm", "eps": [0.01, 0.03], "params": {}, "target": "untargeted", "norm": "linf"},
        {"name": "pgd", "eps": [0.02], "params": {"steps": 3}, "target": "untargeted", "norm": "linf"}]
    assert OmegaConf.to_container(checked.models[2]) == {
        "name": "c", "arch": "tiny_cnn", "init": "random", "dev_set": "d2/2", "instance": 0, "defence": None,
        "adversarial_training": None, "ensemble": [], "mode": "logits", "external": None}
    scheduler = Scheduler(checked, study_facts(checked))
    assert len(scheduler.set_jobs()) == 3 * 3  # every model a surrogate, three (attack, eps) settings
    assert len(scheduler.pair_jobs()) == 3 * 3 * 3
    assert sorted({job.setting["eps"] for job in scheduler.set_jobs()}) == [0.01, 0.02, 0.03]


def test_the_scheduler_refuses_a_misspelt_pair_mode_even_unchecked():
    cfg = load_config(SMOKE)
    cfg.pairs = "whitebx"
    with pytest.raises(ValueError, match=r"^pairs: unknown 'whitebx'; valid: all, whitebox, transfer"):
        Scheduler(cfg, study_facts(cfg))


def expected_smoke(**changes):
    """The smoke preset as a container with `changes` (top-level keys or `a.b` paths) applied by hand."""
    expected = OmegaConf.to_container(load_config(SMOKE))
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = expected
        for parent in parents:
            node = node[int(parent)] if isinstance(node, list) else node[parent]
        node[last] = value
    return expected


def cli_config(monkeypatch, *args):
    """The config `medtransfer plan` hands to `plan_study` for these arguments."""
    seen = []

    def plan_only(cfg, **_):
        seen.append(cfg)
        return SimpleNamespace(text="", problems=[])
    monkeypatch.setattr(experiments.study, "plan_study", plan_only)
    assert main(["plan", "--config", *args]) == 0
    return OmegaConf.to_container(seen[0])


CLI_OVERRIDES = ["train.max_epochs=1", "seeds=[0, 1]", "attacks=[{name: fgsm, eps: [0.01, 0.03]}]"]
CHANGED = {"train__max_epochs": 1, "seeds": [0, 1], "attacks": [{"name": "fgsm", "eps": [0.01, 0.03], "params": {}, "target": "untargeted", "norm": "linf"}]}


@pytest.mark.parametrize("path, overrides", [
    pytest.param(SMOKE, CLI_OVERRIDES, id="list"),
    pytest.param(SMOKE, tuple(CLI_OVERRIDES), id="tuple"),
    pytest.param(SMOKE, {"train": {"max_epochs": 1}, "seeds": [0, 1],
                         "attacks": [{"name": "fgsm", "eps": [0.01, 0.03]}]}, id="nested mapping"),
    pytest.param(SMOKE, {"train.max_epochs": 1, "seeds": [0, 1], "attacks": [{"name": "fgsm", "eps": [0.01, 0.03]}]},
                 id="dotted mapping"),
    pytest.param(SMOKE, OmegaConf.create({"train": {"max_epochs": 1}, "seeds": [0, 1],
                                          "attacks": [{"name": "fgsm", "eps": [0.01, 0.03]}]}), id="DictConfig"),
    pytest.param("smoke", CLI_OVERRIDES, id="preset name"),
])
def test_python_overrides_give_the_config_of_the_same_cli_overrides(path, overrides, monkeypatch):
    from_cli = cli_config(monkeypatch, str(SMOKE), *CLI_OVERRIDES)
    assert from_cli == expected_smoke(**CHANGED)
    assert OmegaConf.to_container(load_config(path, overrides)) == from_cli


@pytest.mark.parametrize("override, changes", [
    pytest.param("train.max_epochs=1", {"train__max_epochs": 1}, id="one string"),
    pytest.param("attacks.1.eps=[0.05]", {"attacks__1__eps": [0.05]}, id="list item by index"),
    pytest.param("attacks[1].params.steps=2", {"attacks__1__params__steps": 2}, id="list item in brackets"),
    pytest.param("data={image_size: 8}", {"data__image_size": 8}, id="mapping merged"),
])
def test_a_single_override_string_is_one_override(override, changes, monkeypatch):
    from_cli = cli_config(monkeypatch, "smoke", override)  # the CLI takes preset names too
    assert from_cli == expected_smoke(**changes)
    assert OmegaConf.to_container(load_config(SMOKE, override)) == from_cli


def test_a_structured_config_and_a_plain_mapping_are_checked_like_a_loaded_one():
    settings = {"models": [{"name": "a"}, {"name": "b", "dev_set": "d2"}], "pairs": "transfer",
                "attacks": [{"name": "pgd", "eps": [0.02]}]}
    loaded = OmegaConf.to_container(load_config(None, settings))
    structured = StudyConfig(models=[ModelConfig(name="a"), ModelConfig(name="b", dev_set="d2")], pairs="transfer",
                             attacks=[AttackConfig(name="pgd", eps=[0.02])])
    assert OmegaConf.to_container(checked_config(structured)) == loaded
    assert OmegaConf.to_container(checked_config(settings)) == loaded
    with pytest.raises(ConfigError, match=r"^pairs: unknown 'whitebx'"):
        checked_config({**settings, "pairs": "whitebx"})
    with pytest.raises(ConfigError, match=r"^models: the model zoo is empty"):
        checked_config(StudyConfig())
    with pytest.raises(ConfigError, match=r"^config: str; give a DictConfig"):
        checked_config("smoke")


@pytest.mark.parametrize("path, overrides, culprit", [
    pytest.param(SMOKE, "seeds=3", "override 'seeds=3': seeds: must be a list, e.g. [3]", id="number for a list"),
    pytest.param(SMOKE, {"seeds": 3}, "override {'seeds': 3}: seeds: must be a list, e.g. [3]", id="mapping number"),
    pytest.param(SMOKE, ["attacks.2.eps=[0.05]"], "override 'attacks.2.eps=[0.05]': attacks: a list of 2 items, "
                 "attacks.0 to attacks.1", id="list item not there"),
    pytest.param(SMOKE, ["models.a.arch=resnet18"], "override 'models.a.arch=resnet18': models: a list of 2 items",
                 id="list item by name"),
    pytest.param(SMOKE, "train.max_epoch=1", "override 'train.max_epoch=1': train.max_epoch: Key 'max_epoch' not in "
                 "'TrainConfig'. Did you mean: 'max_epochs'?", id="key typo"),
    pytest.param(SMOKE, "train.max_epochs=abc", "override 'train.max_epochs=abc': train.max_epochs: Value 'abc'",
                 id="bad type"),
    pytest.param(SMOKE, "train.max_epochs", "override 'train.max_epochs': expected key=value", id="no value"),
    pytest.param(SMOKE, "attacks=[{name:fgsm}]", "override 'attacks=[{name:fgsm}]': 'name:fgsm' reads as one key",
                 id="colon without a space"),
    pytest.param(SMOKE, {"attacks": [{"name": "fgsm", "eps": 0.02}]}, "override {'attacks': [{'name': 'fgsm', 'eps': "
                 "0.02}]}: attacks[0].eps: must be a list, e.g. [0.02]", id="epsilon not a list"),
    pytest.param(SMOKE, {"attacks": {"name": "fgsm"}}, "override {'attacks': {'name': 'fgsm'}}: attacks: a list and a "
                 "mapping do not merge", id="mapping for a list"),
    pytest.param(SMOKE, {"train": {"max_epochs": 0}}, "train.max_epochs: 0; must be at least 1", id="value range"),
    pytest.param(SMOKE, 3, "overrides: 3; give a 'key=value' string", id="overrides a number"),
    pytest.param(SMOKE, {"../x": 1}, "override {'../x': 1}: '../x' is not a config key", id="not a key"),
    pytest.param("smok", None, "smok: config file not found (nor a preset: defences, demo", id="unknown preset"),
])
def test_a_bad_python_override_is_one_line_naming_it(path, overrides, culprit):
    with pytest.raises(ConfigError) as refused:
        load_config(path, overrides)
    assert len(str(refused.value).splitlines()) == 1 and str(refused.value).startswith(culprit)


@pytest.mark.parametrize("override", ["attacks=[{name:fgsm,eps:[0.02]}]", "attacks=[{name: fgsm, eps: [0.02]"])
def test_malformed_yaml_in_a_cli_override_is_one_line_and_exit_2(override, tmp_path, capsys):
    store, out = tmp_path / "mlflow.db", tmp_path / "out"
    code = main(["run", "--config", str(SMOKE), f"tracking.uri=sqlite:///{store}", f"output_dir={out}", override])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"medtransfer: error: override {override!r}: not valid YAML")
    assert list(tmp_path.iterdir()) == []


TEXT = st.text(st.sampled_from("ab.[]{}:,=0 1-'\"$"), max_size=20)


@given(key=st.sampled_from(["seeds", "attacks", "attacks.0", "attacks.0.eps", "train.max_epochs", "pairs", "models",
                            "data", "surrogates", "zz"]), value=TEXT)
def test_any_override_is_a_config_or_one_line(key, value):
    try:
        cfg = load_config(SMOKE, f"{key}={value}")
    except ConfigError as err:  # any other exception fails the test
        assert len(str(err).splitlines()) == 1 and ": " in str(err)
    else:
        assert OmegaConf.to_container(checked_config(cfg)) == OmegaConf.to_container(cfg)
