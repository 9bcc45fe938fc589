"""Wrong `queries:` settings (issue 35) through the CLI: exit 2, one line naming the key, nothing written."""
import pytest

from experiments.cli import main
from experiments.design.config import preset_path

HTTP = ("models=[{name: a}, {name: b, dev_set: d2}, {name: ep, external: {format: http, "
        "uri: 'http://127.0.0.1:9', output: {kind: probabilities}}}]")


def query(**keys) -> str:
    entry = {"name": "square", "eps": "[0.02]", "max_queries": 50, "budgets": "[10, 50]", "start_from": "[clean]",
             **keys}
    return "queries=[{" + ", ".join(f"{k}: {v}" for k, v in entry.items()) + "}]"


CASES = [
    pytest.param([query(name="hopskip")], "queries[0].name: unknown query attack 'hopskip'; valid: square",
                 id="unknown attack"),
    pytest.param([query(norm="l1")], "queries[0].norm: unknown 'l1'; valid: linf, l2", id="unknown norm"),
    pytest.param([query(budgets="[10, 100]")], "queries[0].budgets: 100 above max_queries 50", id="budget above max"),
    pytest.param([query(budgets="[]")], "queries[0].budgets: empty", id="no budgets"),
    pytest.param([query(budgets="[0]")], "queries[0].budgets[0]: 0; must be at least 1", id="budget zero"),
    pytest.param([query(max_queries=0, budgets="[1]")], "queries[0].max_queries: 0; must be at least 1",
                 id="no queries"),
    pytest.param([query(max_queries="many")], "Value 'many'", id="queries not a number"),  # OmegaConf's line
    pytest.param([query(eps="[-0.1]")], "queries[0].eps[0]: -0.1; must be above 0", id="negative eps"),
    pytest.param([query(eps="[nan]")], "queries[0].eps[0]: nan", id="nan eps"),
    pytest.param([query(eps="[2.0]")], "queries[0].eps: 2.0 above 1", id="linf eps above the pixel range"),
    pytest.param([query(eps="[]")], "queries[0].eps: empty", id="no eps"),
    pytest.param([query(start_from="[]")], "queries[0].start_from: empty", id="no start"),
    pytest.param([query(start_from="[c]")], "queries[0].start_from: unknown surrogate 'c'; valid: clean, a, b",
                 id="unknown surrogate"),
    pytest.param([query(start_from="[b]", eps="[0.05]")],
                 "queries[0].start_from: 'b': the study's first attack (fgsm) has no set at eps 0.05",
                 id="no such set"),
    pytest.param([query(start_from="[b]", norm="l2")],
                 "queries[0].start_from: 'b': the study's first attack (fgsm) is linf, the query attack l2",
                 id="norm of the start set"),
    pytest.param([HTTP, "targets=[a]", query(start_from="[ep]")],
                 "queries[0].start_from: 'ep' is an external http model, which gives no gradients", id="http start"),
    pytest.param(["queries=[{name: square, max_querys: 5}]"], "max_querys", id="misspelt key"),
]


@pytest.mark.parametrize("overrides, culprit", CASES)
def test_a_wrong_query_setting_is_one_line_before_any_work(overrides, culprit, tmp_path, capsys):
    code = main(["run", "--config", str(preset_path("smoke")), f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                 f"output_dir={tmp_path / 'out'}", *overrides])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and culprit in err[0] and "Traceback" not in err[0], err
    assert list(tmp_path.iterdir()) == []
