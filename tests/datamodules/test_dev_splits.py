"""Development splits: patient-disjoint, nested as docs/protocol.md says, deterministic, sized by fraction."""
import numpy as np
import pytest

from datamodules.splits import dev_set_indices, split_manifest


def _patients(manifest, dev_set, stage):
    return set(manifest.iloc[dev_set_indices(manifest, dev_set, stage)]["patient_id"])


@pytest.fixture
def manifest():
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(400), rng.integers(1, 5, 400))  # 1-4 images per patient
    return split_manifest(patients, seed=3, test_fraction=0.1, val_fraction=0.1)


def test_splits_are_patient_disjoint_and_nested(manifest):
    test = _patients(manifest, "d1", "test")
    d1 = _patients(manifest, "d1", "train") | _patients(manifest, "d1", "val")
    d2 = _patients(manifest, "d2", "train") | _patients(manifest, "d2", "val")
    assert not (test & d1) and not (test & d2) and not (d1 & d2)
    assert len(test | d1 | d2) == 400
    assert len(test) == 40 and len(d1) == 180 and len(d2) == 180
    assert not (_patients(manifest, "d1", "train") & _patients(manifest, "d1", "val"))
    # d2/2: half of d2's training patients, d2's validation set
    assert _patients(manifest, "d2/2", "train") < _patients(manifest, "d2", "train")
    assert len(_patients(manifest, "d2/2", "train")) == 81  # ceil(162 / 2)
    assert _patients(manifest, "d2/2", "val") == _patients(manifest, "d2", "val")
    # d1/10: a tenth of d1's training and validation patients
    assert _patients(manifest, "d1/10", "train") < _patients(manifest, "d1", "train")
    assert len(_patients(manifest, "d1/10", "train")) == 16 and len(_patients(manifest, "d1/10", "val")) == 2
    # every image of a patient follows the patient
    assert (manifest.groupby("patient_id")["partition"].nunique() == 1).all()


def test_splits_are_deterministic_by_seed():
    patients = np.repeat(np.arange(100), 2)
    a, b, c = (split_manifest(patients, seed=s) for s in (1, 1, 2))
    assert a.equals(b) and not a["partition"].equals(c["partition"])


def test_paper_patient_counts_come_out_of_the_default_split():
    """ChestX-ray14's 30,805 patients, one sample each, split as the paper reports its patient counts
    (docs/protocol.md): test 2,797; d1 and d2 12,604 train + 1,400 val; d1/10 1,260 + 140; d2/2 6,302
    train with d2's validation set."""
    m = split_manifest(np.arange(30805), seed=0)
    counts = {(dev_set, stage): len(dev_set_indices(m, dev_set, stage))
              for dev_set in ("d1", "d2", "d1/10", "d2/2") for stage in ("train", "val")}
    assert len(dev_set_indices(m, "d1", "test")) == 2797
    assert counts == {("d1", "train"): 12604, ("d1", "val"): 1400, ("d2", "train"): 12604, ("d2", "val"): 1400,
                      ("d1/10", "train"): 1260, ("d1/10", "val"): 140, ("d2/2", "train"): 6302,
                      ("d2/2", "val"): 1400}


def test_fixed_test_set_and_empty_split_errors():
    patients = np.arange(50)
    mask = patients >= 45
    m = split_manifest(patients, seed=0, sample_ids=[f"s{p}" for p in patients], test_mask=mask)
    assert set(m.loc[m["partition"] == "test", "sample_id"]) == {f"s{p}" for p in range(45, 50)}
    tiny = split_manifest(np.arange(4), seed=0)
    with pytest.raises(ValueError, match=r"d1/10 has an empty train split"):
        dev_set_indices(tiny, "d1/10", "train")
