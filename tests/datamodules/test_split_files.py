"""Splits from files (`data.splits`): the paper authors' four YAML files and the sample_id,split CSV,
on a small folder laid out like the ChestX-ray14 release."""
import hashlib

import pandas as pd
import pytest
from PIL import Image

from datamodules import build_datamodule

PATIENTS = 40  # two images each: ids 00000000_000, 00000000_001, ...


def write_nih(root):
    """Data_Entry_2017.csv and `images_NNN/images/<id>.png`, as the release ships them."""
    rows = []
    for p in range(PATIENTS):
        for k in range(2):
            name = f"{p:08d}_{k:03d}.png"
            rows.append({"Image Index": name, "Finding Labels": "No Finding" if p % 2 else "Effusion",
                         "Patient ID": str(p)})
            folder = root / f"images_{1 + p // 20:03d}" / "images"
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("L", (12, 12), p).save(folder / name)
    pd.DataFrame(rows).to_csv(root / "Data_Entry_2017.csv", index=False)
    return [r["Image Index"][:-4] for r in rows]


def ids_of(patients):
    return [f"{p:08d}_{k:03d}" for p in patients for k in range(2)]


SETS = {  # the authors' d0..d3 over patients: test 0-7; d1 8-23 (d1/10 = 8,9 + 20); d2 24-39 (d2/2 half)
    "d0": (range(8, 10), range(20, 21)), "d1": (range(8, 20), range(20, 24)),
    "d2": (range(24, 36), range(36, 40)), "d3": (range(24, 30), range(36, 40)),
}


def write_author_yaml(folder, sets=SETS, test=range(0, 8), edit=None):
    """The authors' format: unquoted ids (YAML 1.1 reads 00000003_000 as the octal number 1536)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (train, val) in sets.items():
        lists = {"testIDs": ids_of(test), "trainIDs": ids_of(train), "valIDs": ids_of(val)}
        if edit:
            edit(name, lists)
        text = "".join(f"{key}:\n" + "".join(f"- {i}\n" for i in ids) for key, ids in lists.items())
        (folder / f"{name}_filenames.yml").write_text(text)
    return folder


def cfg(root, splits, dev_set="d1"):
    return dict(domain="radiology", source="chestxray14", root=str(root), image_size=8, seed=0,
                dev_set=dev_set, batch_size=4, splits=str(splits), cache_dir="none")


def names(data, part):
    return sorted(data.manifest.iloc[data.indices[part]]["sample_id"].str[:-4])


def test_author_yaml_files_give_the_papers_four_development_sets(tmp_path):
    write_nih(tmp_path / "nih")
    folder = write_author_yaml(tmp_path / "splits")
    expected = {"d1/10": "d0", "d1": "d1", "d2": "d2", "d2/2": "d3"}
    for dev_set, file_key in expected.items():
        data = build_datamodule(cfg(tmp_path / "nih", folder, dev_set))
        train, val = SETS[file_key]
        assert names(data, "train") == sorted(ids_of(train)), dev_set
        assert names(data, "val") == sorted(ids_of(val)), dev_set
        assert names(data, "test") == sorted(ids_of(range(8)))
    digest = hashlib.sha256("".join(
        f"d{k}_filenames.yml {hashlib.sha256((folder / f'd{k}_filenames.yml').read_bytes()).hexdigest()}\n"
        for k in range(4)).encode()).hexdigest()
    assert set(data.manifest["split_sha256"]) == {digest}
    assert set(data.manifest["split_source"]) == {str(folder.resolve())}


def test_csv_splits_and_unlisted_samples_left_out(tmp_path):
    write_nih(tmp_path / "nih")
    rows = [(i, "test") for i in ids_of(range(4))] + [(i, "d1_train") for i in ids_of(range(4, 10))]
    rows += [(i, "d1_val") for i in ids_of(range(10, 12))] + [(i, "d1/10_train") for i in ids_of(range(4, 5))]
    rows += [(i, "d1/10_val") for i in ids_of(range(10, 11))]
    csv = tmp_path / "splits.csv"
    pd.DataFrame(rows, columns=["sample_id", "split"]).to_csv(csv, index=False)
    data = build_datamodule(cfg(tmp_path / "nih", csv))
    assert names(data, "train") == sorted(ids_of(range(4, 10)))
    assert names(data, "test") == sorted(ids_of(range(4)))
    assert (data.manifest["partition"] == "none").sum() == 2 * (PATIENTS - 12)
    assert set(data.manifest["split_sha256"]) == {hashlib.sha256(csv.read_bytes()).hexdigest()}
    tenth = build_datamodule(cfg(tmp_path / "nih", csv, "d1/10"))
    assert names(tenth, "train") == sorted(ids_of([4]))
    with pytest.raises(ValueError, match="development set d2 has an empty train split"):
        build_datamodule(cfg(tmp_path / "nih", csv, "d2"))


def _moved(name, key, ids):
    def edit(file_name, lists):
        if file_name == name:
            lists[key] = lists[key] + ids
    return edit


@pytest.mark.parametrize("edit, culprit", [
    pytest.param(_moved("d1", "trainIDs", ["00099999_000"]),
                 r"d1_filenames.yml: id '00099999_000' \(d1 train\) is not in the data \(rule: every id exists\)",
                 id="unknown id"),
    pytest.param(_moved("d2", "valIDs", ["00000000_000"]),
                 r"d2_filenames.yml: id '00000000_000' is in test and in d2 val \(rule: the test set shares no id",
                 id="test in dev"),
    pytest.param(_moved("d2", "trainIDs", ["00000012_000"]),
                 r"d2_filenames.yml: id '00000012_000' is in d1 train and in d2 train \(rule: d1 and d2 share no id\)",
                 id="d1 and d2"),
    pytest.param(_moved("d1", "valIDs", ["00000008_000"]),
                 r"d1_filenames.yml: id '00000008_000' is in d1 train and in d1 val \(rule: d1's train and val",
                 id="train and val"),
    pytest.param(_moved("d3", "trainIDs", ["00000038_000"]),
                 r"d3_filenames.yml: id '00000038_000' is in d2/2 train but not in d2 train \(rule: d2/2 lies within d2",
                 id="d2/2 outside d2"),
    pytest.param(_moved("d2", "testIDs", ["00000008_001"]),
                 r"d2_filenames.yml: testIDs differ from those of .*d0_filenames.yml \(rule: the four files share",
                 id="test sets differ"),
    pytest.param(_moved("d0", "trainIDs", ["00000008_000"]),
                 r"d0_filenames.yml: id '00000008_000' is listed twice in d1/10 train", id="listed twice"),
])
def test_each_rule_is_one_line_naming_file_id_and_rule(edit, culprit, tmp_path):
    write_nih(tmp_path / "nih")
    folder = write_author_yaml(tmp_path / "splits", edit=edit)
    with pytest.raises(ValueError, match=culprit) as err:
        build_datamodule(cfg(tmp_path / "nih", folder))
    assert "\n" not in str(err.value)


def test_missing_and_malformed_split_files(tmp_path):
    write_nih(tmp_path / "nih")
    folder = write_author_yaml(tmp_path / "splits")
    (folder / "d3_filenames.yml").unlink()
    with pytest.raises(FileNotFoundError, match=r"d3_filenames.yml: split file not found"):
        build_datamodule(cfg(tmp_path / "nih", folder))
    (folder / "d3_filenames.yml").write_text("trainIDs: 3\n")
    with pytest.raises(ValueError, match=r"d3_filenames.yml: key 'trainIDs' must be a list of image ids"):
        build_datamodule(cfg(tmp_path / "nih", folder))
    csv = tmp_path / "s.csv"
    csv.write_text("sample_id,split\n00000000_000,d3_train\n")
    with pytest.raises(ValueError, match=r"s.csv, line 2: unknown split 'd3_train'; valid: test, d1_train"):
        build_datamodule(cfg(tmp_path / "nih", csv))
    with pytest.raises(FileNotFoundError, match=r"nowhere: split file or folder not found \(data.splits\)"):
        build_datamodule(cfg(tmp_path / "nih", tmp_path / "nowhere"))
