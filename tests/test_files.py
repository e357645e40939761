"""Safe file writing: atomic, never clobbering, never leaving the output folder."""

from __future__ import annotations

import os

import pytest

from graphgen.files import UnsafePathError, atomic_write_bytes, safe_join, write_new_file


def test_safe_join_refuses_escapes(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    assert safe_join(root, "a/b.png") == root.resolve() / "a" / "b.png"
    for bad in ["../x", "a/../../x", "/etc/passwd", "", "a\x00b", "..\\x"]:
        with pytest.raises(UnsafePathError):
            safe_join(root, bad)
    os.symlink(tmp_path, root / "link")
    with pytest.raises(UnsafePathError, match="outside"):
        safe_join(root, "link/evil.png")


def test_atomic_write_never_clobbers(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"one")
    with pytest.raises(FileExistsError):
        atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"one"
    atomic_write_bytes(path, b"three", overwrite=True)
    assert path.read_bytes() == b"three"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp files left behind


def test_failed_write_leaves_nothing(tmp_path):
    def explode(handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_new_file(tmp_path, "img", ".png", explode)
    assert list(tmp_path.iterdir()) == []


def test_numbered_names_skip_taken(tmp_path):
    first = write_new_file(tmp_path, "img", ".png", lambda h: h.write(b"1"))
    second = write_new_file(tmp_path, "img", ".png", lambda h: h.write(b"2"))
    assert first.name == "img_00001_.png" and second.name == "img_00002_.png"
    (tmp_path / "img_00007_.png").write_bytes(b"user file")
    third = write_new_file(tmp_path, "img", ".png", lambda h: h.write(b"3"))
    assert third.name == "img_00008_.png" and (tmp_path / "img_00007_.png").read_bytes() == b"user file"


def test_files_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "a.bin", b"x")
        numbered = write_new_file(tmp_path, "img", ".png", lambda h: h.write(b"1"))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert numbered.stat().st_mode & 0o777 == 0o644
