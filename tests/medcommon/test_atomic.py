"""`medcommon.atomic.replaced`: the file appears whole or not at all, and nothing is left beside it."""
import os
import stat

import pytest

from medcommon.atomic import replaced


def test_written_file_is_renamed_into_place(tmp_path):
    target = tmp_path / "entry.bin"
    target.write_bytes(b"old")
    with replaced(target) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith("entry.bin.") and temporary.suffix == ".tmp"
        temporary.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # not yet replaced while the block runs
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.bin"]
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600  # mkstemp's owner-only file


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "entry.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with replaced(target, prefix="x.", suffix=".part") as temporary:
            assert temporary.name.startswith("x.") and temporary.name.endswith(".part")
            temporary.write_bytes(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.bin"]


def test_a_named_temporary_is_left_to_the_caller_to_create(tmp_path):
    target, named = tmp_path / "secret", tmp_path / ".secret.1.tmp"
    with replaced(target, temporary=named) as temporary:
        assert temporary == named and not named.exists()
        named.write_text("x")
    assert target.read_text() == "x" and not named.exists()
    with pytest.raises(OSError):
        with replaced(tmp_path / "other", temporary=named):
            pass  # nothing written: the rename fails, and nothing is created
    assert not (tmp_path / "other").exists()
