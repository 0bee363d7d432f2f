"""defectdet.config's atomic writer: whole files only, and the permissions a plain open() would give."""

import os
import stat

import pytest

from defectdet.config import atomic_write_bytes, atomic_write_text


def test_atomic_write_gives_a_new_file_the_umask_mode_and_keeps_an_existing_one(tmp_path):
    old = os.umask(0o027)
    try:
        new = atomic_write_text(tmp_path / "report.json", "{}\n")
        assert stat.S_IMODE(new.stat().st_mode) == 0o640  # 0o666 & ~umask, not mkstemp's 0600
        kept = tmp_path / "thresholds.yaml"
        kept.write_text("a: 1\n")
        kept.chmod(0o604)
        atomic_write_bytes(kept, b"a: 2\n")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o604 and kept.read_text() == "a: 2\n"
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "thresholds.yaml"]  # no temp left


def test_atomic_write_syncs_unless_told_not_to_and_leaves_no_temp_on_failure(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    atomic_write_bytes(tmp_path / "a.bin", b"a")
    atomic_write_bytes(tmp_path / "b.jpg", b"b", fsync=False)  # snapshots: no sync per file
    assert len(synced) == 1 and (tmp_path / "b.jpg").read_bytes() == b"b"

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(tmp_path / "a.bin", b"new")
    assert (tmp_path / "a.bin").read_bytes() == b"a"  # the old file is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.jpg"]
