"""A sweep driven from Python as a user writes one (README, "From Python"): a preset loaded with its
overrides as a mapping, three variants of one study name in one store, each `StudyResult` read, one
query through `search_pairs` equal to a variant's table, and a model loaded back from its run scoring
the test images as the study did."""
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from medtransfer import StudyResult, build_datamodule, load_config, load_model, run_study, scores, search_pairs

pytestmark = pytest.mark.slow  # three studies end to end

EPS = (0.01, 0.02, 0.03)
KEYS = ["seed", "surrogate", "target", "attack", "eps"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, new_store):
    root = tmp_path_factory.mktemp("sweep")
    uri = new_store(root / "mlflow.db")
    results = []
    for eps in EPS:  # the variants differ in their attack's epsilon only
        cfg = load_config("smoke", overrides={"train": {"max_epochs": 1}, "bootstrap_resamples": 50,
                                              "attacks": [{"name": "fgsm", "eps": [eps]}],
                                              "tracking": {"uri": uri}, "output_dir": str(root)})
        results.append(run_study(cfg))
    return uri, results


def model_runs(uri: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name("smoke").experiment_id], "tags.kind = 'model'")


def test_each_variant_has_its_result_report_and_run_and_shares_the_models(sweep):
    uri, results = sweep
    assert all(isinstance(r, StudyResult) for r in results)
    assert len(model_runs(uri)) == 2  # models a and b, trained by the first variant, reused by the others
    assert len({r.reports["pathology"] for r in results}) == len({r.study_run_names["pathology"] for r in results}) == 3
    for eps, result in zip(EPS, results):
        assert set(result.table.eps) == {eps} and len(result.table) == 4  # a->a, a->b, b->a, b->b
        written = pd.read_csv(result.reports["pathology"] / "results.csv")
        assert list(written.run_id) == list(result.table.run_id)
        assert not result.findings.empty and set(result.findings.finding) <= {"d", "e"}  # what smoke's pairs test
        findings = pd.read_csv(result.reports["pathology"] / "findings.csv")
        assert list(findings.finding) == list(result.findings.finding)
        assert findings.effect.to_numpy() == pytest.approx(result.findings.effect.to_numpy())
        assert result.experiment_name == "smoke" and result.links["pathology"].startswith("http")


def test_search_pairs_gives_a_variants_table(sweep):
    uri, results = sweep
    middle = results[1]
    found = search_pairs(uri, study=middle.study_runs["pathology"])
    ordered = lambda t: t.sort_values(KEYS).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(ordered(found), ordered(middle.table))
    assert search_pairs(uri, study=middle.study_runs["pathology"], surrogate="b", target="a").run_id.tolist() == \
        middle.table[(middle.table.surrogate == "b") & (middle.table.target == "a")].run_id.tolist()


def test_a_model_loaded_from_its_run_scores_as_the_study(sweep, tmp_path):
    uri, results = sweep
    row = results[0].table.query("surrogate == 'a' and target == 'b'").iloc[0]
    client = MlflowClient(uri)
    model = load_model(client.get_run(row.run_id).data.tags["target_run_id"], uri)
    predictions = pd.read_csv(client.download_artifacts(row.run_id, "predictions.csv", str(tmp_path)))
    data = build_datamodule(domain="pathology", image_size=16, num_patients=120, images_per_patient=2,
                            test_fraction=0.25)  # the smoke preset's data; the other keys: their defaults
    assert list(predictions["sample"]) == [int(i) for i in data.indices["test"]]
    with torch.no_grad():
        mine = scores(data.task, model(torch.cat([x for x, _ in data.test_dataloader()])))
    torch.testing.assert_close(mine, torch.tensor(predictions["clean"].to_numpy(), dtype=torch.float32),
                               atol=1e-5, rtol=0)
