"""Hostile query rows given to the report (`write_report(..., queries=rows)`): each is refused in one
line naming the column or value, before any report file is written or removed."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from experiments.report import write_report
from experiments.report.queries import COLUMNS, check_query_rows


def good_rows(n=6):
    rows = []
    for start in ("clean", "a"):
        for i in range(n):
            rows.append({"target": "b", "start": start, "attack": "square", "norm": "linf", "eps": 0.03,
                         "max_queries": 100, "image": i, "label": i % 2, "clean_correct": i != 0,
                         "queries": 10 * (i + 1) if i else 0, "success": i != 0})
    return pd.DataFrame(rows)


def results():
    return pd.DataFrame({"surrogate": ["a", "b"], "target": ["b", "b"], "attack": ["fgsm", "fgsm"],
                         "eps": [0.03, 0.03], "asr_correct": [0.5, 0.9], "run_id": ["r1", "r2"]})


def changed(column, value, row=3):
    rows = good_rows().astype({column: object})
    rows.at[row, column] = value
    return rows


HOSTILE = {
    "missing column": (good_rows().drop(columns="success"), "missing: success"),
    "unexpected column": (good_rows().assign(seed=0), "unexpected: seed"),
    "queries over the budget": (changed("queries", 101), "queries must be in [1, max_queries] for a clean-correct image, got 101"),
    "zero queries": (changed("queries", 0), "queries must be in [1, max_queries] for a clean-correct image, got 0"),
    "never fooled below the budget": (changed("success", False), "max_queries where never fooled"),
    "unknown norm": (changed("norm", "l3"), "norm must be one of linf, l2, got 'l3'"),
    "negative eps": (changed("eps", -0.1), "eps must be finite and > 0, got -0.1"),
    "infinite eps": (changed("eps", float("inf")), "eps must be finite and > 0"),
    "text for a number": (changed("eps", "0.03; rm -rf /"), "eps must be numbers"),
    "fractional image": (changed("image", 1.5), "image must be whole numbers"),
    "huge budget": (changed("max_queries", 1e300), "max_queries must be whole numbers"),
    "boolean label": (changed("label", True), "label must be whole numbers"),
    "negative label": (changed("label", -1), "label must be >= 0, got -1"),
    "queries for an image wrong unattacked": (changed("queries", 5, row=0), "0 (and success false) for an image"),
    "text for a flag": (changed("clean_correct", "yes"), "clean_correct must be true/false"),
    "two-line name": (changed("target", "b\n| injected |"), "target must be non-empty text on one line"),
    "duplicate row": (pd.concat([good_rows(), good_rows().iloc[[2]]], ignore_index=True), "more than one row for"),
    "start on other images": (good_rows().drop(index=8), "must pair by image"),
    "starts disagree on a label": (changed("label", 1, row=8), "must pair by image"),
    "target not in the study": (good_rows().assign(target="z"), "target 'z' is not a model of the study"),
    "start not in the study": (good_rows().replace({"start": {"a": "evil"}}), "start 'evil' is not a model"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_query_rows_are_refused_in_one_line_before_any_file(name, tmp_path):
    rows, message = HOSTILE[name]
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "results.csv").write_text("an earlier report\n")
    with pytest.raises(ValueError) as refused:
        write_report(results(), folder, None, pd.DataFrame(), {}, 10, 0, queries=rows)
    text = str(refused.value)
    assert message in text and "\n" not in text and text.startswith("query rows: ")
    assert [p.name for p in folder.iterdir()] == ["results.csv"]  # nothing written, nothing removed
    assert (folder / "results.csv").read_text() == "an earlier report\n"


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True),
                   st.text(max_size=8), st.just("clean"), st.just(np.int64(7)))


@given(column=st.sampled_from(sorted(COLUMNS)), row=st.integers(0, 11), value=VALUES)
def test_any_single_cell_is_accepted_by_the_contract_or_refused_with_a_value_error(column, row, value):
    rows = good_rows().astype({column: object})
    rows.at[row, column] = value
    try:
        out = check_query_rows(rows, {"a", "b"})
    except ValueError as err:
        assert str(err).startswith("query rows: ") and "\n" not in str(err)
        return
    right, wrong = out[out.clean_correct], out[~out.clean_correct]
    assert ((right.queries >= 1) & (right.queries <= right.max_queries)).all() and (out.label >= 0).all()
    assert out.norm.isin(("linf", "l2")).all() and (out.eps > 0).all() and np.isfinite(out.eps).all()
    assert (right.success | (right.queries == right.max_queries)).all()
    assert ((wrong.queries == 0) & ~wrong.success).all()
