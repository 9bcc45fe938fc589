"""The presets express the paper's designs; `base:` chains and designs behave as documented."""
import re
from pathlib import Path

import pytest

from experiments.design.config import ConfigError, domain_config, load_config, preset_path
from experiments.design.locations import CONFIG_DIR
from experiments.design.scheduler import Scheduler
from experiments.preflight.facts import study_facts

PRESETS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def pairs_of(cfg):
    sub = domain_config(cfg, next(iter(cfg.domains))) if cfg.domains else cfg
    scheduler = Scheduler(sub, study_facts(sub))
    return scheduler.zoo, {(p.set.surrogate.name, p.target.name) for p in scheduler.pair_jobs()}


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_plans(name):
    zoo, pairs = pairs_of(load_config(preset_path(name)))
    assert pairs and all(s in zoo and t in zoo for s, t in pairs)


def documented_presets() -> set[str]:
    """The preset names of the README's preset table (`tableA` ... `tableB` spelled out)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme.split("### Presets")[1].split("\n\n")[1]
    names = set()
    for row in table.splitlines()[2:]:
        cell = row.split("|")[1]
        found = re.findall(r"`(\w+)`", cell)
        if "..." in cell:
            (prefix, first), (_, last) = (re.match(r"(\D+)(\d+)", n).groups() for n in found)
            found = [f"{prefix}{i}" for i in range(int(first), int(last) + 1)]
        names.update(found)
    return names


def test_the_readme_documents_exactly_the_preset_files():
    assert documented_presets() == set(PRESETS)


def factors(zoo, pairs):
    return {((zoo[s].arch, zoo[s].init, zoo[s].dev_set), (zoo[t].arch, zoo[t].init, zoo[t].dev_set)) for s, t in pairs}


def test_table_designs_follow_the_paper():
    zoo, pairs = pairs_of(load_config(preset_path("table4")))
    assert {zoo[t].dev_set for _, t in pairs} == {"d1"}
    assert {zoo[s].dev_set for s, _ in pairs} == {"d1", "d2", "d2/2"}
    assert {zoo[m].init for pair in pairs for m in pair} == {"random"}
    assert all(s != t for s, t in pairs)  # same-config surrogates are second instances
    zoo, pairs = pairs_of(load_config(preset_path("table5")))
    assert {(zoo[s].dev_set, zoo[t].dev_set) for s, t in pairs} == {("d2", "d1/10")}
    assert len(pairs) == 16  # 2 archs x 2 inits for target and surrogate
    zoo, pairs = pairs_of(load_config(preset_path("table3")))
    assert len(factors(zoo, pairs)) == 16 and {zoo[m].dev_set for p in pairs for m in p} == {"d1"}
    paper_zoo, paper_pairs = pairs_of(load_config(preset_path("paper")))
    for table in ("table2", "table3", "table4", "table5"):
        assert pairs_of(load_config(preset_path(table)))[1] <= paper_pairs


def test_base_chain_overrides_and_loop(tmp_path):
    (tmp_path / "a.yaml").write_text(f"base: {preset_path('smoke')}\nname: child\ntrain: {{max_epochs: 7}}\n")
    cfg = load_config(tmp_path / "a.yaml")
    assert cfg.name == "child" and cfg.train.max_epochs == 7 and cfg.data.image_size == 16
    (tmp_path / "b.yaml").write_text("base: c.yaml\n")
    (tmp_path / "c.yaml").write_text("base: b.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "b.yaml")


def test_design_with_unknown_model_names_it(tmp_path, smoke_config):
    with pytest.raises(ConfigError, match=r"designs\[0\].targets\[\d\]: unknown model 'nope'"):
        smoke_config(tmp_path, "designs=[{targets: [nope], surrogates: [a]}]")
