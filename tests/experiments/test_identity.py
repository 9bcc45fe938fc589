"""Identities: a speed option never changes one; a result key changes exactly the work it affects."""
import hashlib

import pytest
import torch
from mlflow.tracking import MlflowClient

from experiments import run_study
from experiments.design import identity
from experiments.design.scheduler import Scheduler
from experiments.execution.evaluation import PAIR_METRICS
from experiments.preflight import facts
from experiments.preflight.facts import study_facts

SPEED = ["data.num_workers=2", "data.pin_memory=true", "data.cache_dir=/elsewhere", "crafting.batch_size=3",
         "crafting.auto_batch=false", "crafting.device=cpu",
         "trainer.accelerator=cpu", "tracking.uri=sqlite:////elsewhere/mlflow.db", "output_dir=/elsewhere"]
ATTACKS = "attacks=[{name: fgsm, eps: [0.02]}, {name: ifgsm, eps: [0.02], params: {alpha: 0.005, steps: %d}}]"
MODELS = "models=[{name: a, dev_set: d1}, {name: b, dev_set: d2, %s}]"


def work(cfg) -> dict:
    """Every identity of the study, by kind: {kind: {what: key}}."""
    scheduler = Scheduler(cfg, study_facts(cfg))
    return {"model": {job.name: job.key for job in scheduler.model_jobs()},
            "set": {(job.surrogate.name, job.setting["name"]): job.key for job in scheduler.set_jobs()},
            "pair": {(p.set.surrogate.name, p.target.name, p.set.setting["name"]): p.key
                     for p in scheduler.pair_jobs()},
            "study": {"study": identity.study_key(cfg, study_facts(cfg))}}


def changed(before: dict, after: dict) -> dict:
    """{kind: set of what got a new identity}."""
    return {kind: {what for what, key in after[kind].items() if before[kind].get(what) != key} for kind in before}


@pytest.fixture
def base(smoke_config, tmp_path):
    return smoke_config(tmp_path)


@pytest.mark.parametrize("option", SPEED)
def test_a_speed_option_keeps_every_identity(smoke_config, tmp_path, base, option):
    assert work(smoke_config(tmp_path, option)) == work(base)


ALL = object()  # every model, set or pair of the study
CASES = {  # override -> what it must redo, by kind (missing kind: nothing of it)
    "train.lr=0.002": {"model": ALL, "set": ALL, "pair": ALL, "study": ALL},
    "data.image_size=20": {"model": ALL, "set": ALL, "pair": ALL, "study": ALL},
    "data.seed=3": {"model": ALL, "set": ALL, "pair": ALL, "study": ALL},
    "trainer.precision=bf16-mixed": {"model": ALL, "set": ALL, "pair": ALL, "study": ALL},
    "seed=5": {"model": ALL, "set": ALL, "pair": ALL, "study": ALL},
    MODELS % "instance: 1": {"model": {"b"}, "set": {("b", "fgsm"), ("b", "ifgsm")},
                            "pair": {(s, t, a) for s in "ab" for t in "ab" for a in ("fgsm", "ifgsm") if "b" in s + t},
                            "study": ALL},
    ATTACKS % 6: {"set": {("a", "ifgsm"), ("b", "ifgsm")},
                                 "pair": {(s, t, "ifgsm") for s in "ab" for t in "ab"}, "study": ALL},
    "crafting.precision=bf16": {"set": ALL, "pair": ALL, "study": ALL},
    "crafting.channels_last=true": {"set": ALL, "pair": ALL, "study": ALL},  # other kernels, other last bits
    "bootstrap_resamples=10": {"pair": ALL, "study": ALL},
    "name=renamed": {"study": ALL},
    "pairs=whitebox": {"study": ALL},
}


@pytest.mark.parametrize("override", CASES)
def test_a_result_key_changes_exactly_the_work_it_affects(smoke_config, tmp_path, base, override):
    before = work(base)
    after = work(smoke_config(tmp_path, override))
    expected = {kind: set(before[kind]) if CASES[override].get(kind) is ALL else CASES[override].get(kind, set())
                for kind in before}
    assert changed(before, after) == {kind: expected[kind] & set(after[kind]) for kind in before}


def test_the_code_version_is_part_of_every_identity(base, monkeypatch):
    before = work(base)
    monkeypatch.setattr(facts, "code_version", lambda: "another-commit")
    assert changed(before, work(base)) == {kind: set(keys) for kind, keys in before.items()}


def test_an_attack_setting_is_named_by_its_complete_parameters(smoke_config, tmp_path, base):
    spelled_out = ("attacks=[{name: fgsm, eps: [0.02], params: {quantize: false}}, {name: ifgsm, eps: [0.02],"
                   " params: {alpha: 0.005, steps: 5, quantize: false}}]")
    assert work(smoke_config(tmp_path, spelled_out)) == work(base)
    assert work(smoke_config(tmp_path, ATTACKS % 5, MODELS % "arch: tiny_cnn")) == work(base)


def test_a_checkpoint_init_is_named_by_the_weights_it_loads(smoke_config, tmp_path):
    path = tmp_path / "init.pt"
    torch.save({"w": torch.zeros(2)}, path)
    cfg = smoke_config(tmp_path, f"models=[{{name: a, init: 'checkpoint:{path}'}}, {{name: b, dev_set: d2}}]")
    first = work(cfg)["model"]
    torch.save({"w": torch.ones(2)}, path)  # same file name, other weights
    second = work(cfg)["model"]
    assert first["a"] != second["a"] and first["b"] == second["b"]


def store_contents(root) -> dict:
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return {kind: sorted(r.info.run_id for r in runs if r.data.tags["kind"] == kind)
            for kind in ("model", "pair", "study")}


def sets(root) -> list[str]:
    return sorted(path.name for path in (root / "adversarial_sets").glob("*.set"))


@pytest.mark.slow
def test_speed_options_reuse_every_run_and_set_and_a_result_key_redoes_its_work(smoke_config, tmp_path):
    fast = ["train.max_epochs=1", "bootstrap_resamples=20"]
    first = run_study(smoke_config(tmp_path, *fast)).table
    stored, crafted = store_contents(tmp_path), sets(tmp_path)
    assert (len(stored["model"]), len(stored["pair"]), len(stored["study"]), len(crafted)) == (2, 8, 1, 4)

    speed = ["data.num_workers=1", "data.pin_memory=true", f"data.cache_dir={tmp_path / 'data'}",
             "crafting.batch_size=7", "crafting.auto_batch=false"]
    again = run_study(smoke_config(tmp_path, *fast, *speed)).table
    assert store_contents(tmp_path) == stored and sets(tmp_path) == crafted  # nothing new
    assert list(again.run_id) == list(first.run_id)  # every row read back from its pair run
    numbers = [m for m in PAIR_METRICS if not m.endswith("_seconds")]
    assert again[numbers].equals(first[numbers])

    redone = run_study(smoke_config(tmp_path, "train.max_epochs=1", "bootstrap_resamples=30")).table
    now = store_contents(tmp_path)
    assert now["model"] == stored["model"] and sets(tmp_path) == crafted  # models and sets reused
    assert len(now["pair"]) == 16 and set(redone.run_id).isdisjoint(first.run_id)  # every pair redone
    assert len(now["study"]) == 2
    assert redone.auc_adv.tolist() == first.auc_adv.tolist()  # the same sets and targets
    assert not redone.auc_adv_lo.equals(first.auc_adv_lo)



def test_split_files_count_by_their_content_not_their_path(smoke_config, tmp_path, base):
    csv = tmp_path / "splits.csv"
    csv.write_text("sample_id,split\np0_0,test\np1_0,d1_train\n")
    folder = tmp_path / "authors"
    folder.mkdir()
    for k in range(4):
        (folder / f"d{k}_filenames.yml").write_text(f"testIDs:\n- 00000000_000\ntrainIDs:\n- 0000000{k}_001\n")
    first, authors = work(smoke_config(tmp_path, f"data.splits={csv}")), work(smoke_config(tmp_path, f"data.splits={folder}"))
    assert changed(work(base), first) == {kind: set(keys) for kind, keys in first.items()}
    assert changed(first, authors) == {kind: set(keys) for kind, keys in first.items()}

    moved = tmp_path / "elsewhere.csv"
    moved.write_bytes(csv.read_bytes())
    assert work(smoke_config(tmp_path, f"data.splits={moved}")) == first  # same content, same work
    csv.write_text("sample_id,split\np0_0,test\np2_0,d1_train\n")  # edited in place: new work everywhere
    assert changed(first, work(smoke_config(tmp_path, f"data.splits={csv}"))) == {kind: set(keys) for kind, keys in first.items()}
    (folder / "d3_filenames.yml").write_text("testIDs:\n- 00000000_000\ntrainIDs:\n- 00000009_001\n")
    assert changed(authors, work(smoke_config(tmp_path, f"data.splits={folder}"))) == {kind: set(keys) for kind, keys in first.items()}
    expected = "sha256:" + hashlib.sha256(moved.read_bytes()).hexdigest()
    cfg = smoke_config(tmp_path, f"data.splits={moved}")
    assert identity.data_identity(cfg, study_facts(cfg))["splits"] == expected


def test_the_facts_of_other_data_are_refused_and_the_facts_hold_what_design_no_longer_reads(base, tmp_path,
                                                                                             smoke_config):
    other = smoke_config(tmp_path, "data.seed=5")
    with pytest.raises(ValueError, match="study facts of other data settings"):
        identity.data_identity(other, study_facts(base))
    split_file = tmp_path / "splits.csv"
    split_file.write_text("sample_id,split\np0_0,test\n")
    found = study_facts(smoke_config(tmp_path, f"data.splits={split_file}"))
    assert found.splits == "sha256:" + hashlib.sha256(split_file.read_bytes()).hexdigest()
    assert found.content == "" and found.code == facts.code_version()
