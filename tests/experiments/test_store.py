"""The results store: atomic files, crash-safe appends, tolerant reads, clear write errors."""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os

import pytest

from normonly._atomic import atomic_write_bytes, atomic_write_text
from normonly.experiments import store
from normonly.experiments.store import StoreError, append_row, read_rows


def test_atomic_write_roundtrip(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_failure_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")

    def boom(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_rejects_wrong_type(tmp_path):
    with pytest.raises(TypeError, match="text must be str"):
        atomic_write_text(tmp_path / "x", b"bytes")


def test_append_and_read(tmp_path):
    path = tmp_path / "rows.jsonl"
    assert read_rows(path) == []
    append_row(path, {"key": "a", "seed": 0, "x": [1, 2]})
    append_row(path, {"key": "b", "seed": 1, "x": float("inf")})
    rows = read_rows(path)
    assert [r["key"] for r in rows] == ["a", "b"]
    assert rows[1]["x"] == float("inf")
    assert read_rows(tmp_path) == rows  # a run directory works too
    assert path.read_text().endswith("\n")


def test_append_requires_key(tmp_path):
    with pytest.raises(ValueError, match="key"):
        append_row(tmp_path / "rows.jsonl", {"seed": 1})


def test_truncated_last_line_is_ignored_and_next_append_parses(tmp_path, caplog):
    path = tmp_path / "rows.jsonl"
    append_row(path, {"key": "a", "seed": 0})
    append_row(path, {"key": "b", "seed": 1})
    with open(path, "ab") as handle:  # what kill -9 in the middle of a write leaves behind
        handle.write(b'{"key": "c", "seed": 2, "val')
    with caplog.at_level(logging.WARNING, logger="normonly.experiments.store"):
        assert [r["key"] for r in read_rows(path)] == ["a", "b"]
    assert "unfinished last line" in caplog.text
    append_row(path, {"key": "c", "seed": 2})
    assert [r["key"] for r in read_rows(path)] == ["a", "b", "c"]
    lines = path.read_text().split("\n")
    assert json.loads(lines[-2]) == {"key": "c", "seed": 2}  # not glued onto the fragment


def test_garbage_lines_skipped_and_first_duplicate_wins(tmp_path, caplog):
    path = tmp_path / "rows.jsonl"
    path.write_text(
        '{"key": "a", "v": 1}\n'
        "not json\n"
        "[1, 2]\n"
        '{"no_key": 1}\n'
        '{"key": "a", "v": 2}\n'
        "\n"
        '{"key": "b", "v": 3}\n'
    )
    with caplog.at_level(logging.WARNING):
        rows = read_rows(path)
    assert rows == [{"key": "a", "v": 1}, {"key": "b", "v": 3}]
    assert "duplicate key 'a'" in caplog.text


def test_disk_full_raises_store_error_and_keeps_rows(tmp_path, monkeypatch):
    path = tmp_path / "rows.jsonl"
    append_row(path, {"key": "a", "seed": 0})
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[:5]))  # a partial write before the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "write", half_then_full)
    with pytest.raises(StoreError, match="No space left") as info:
        append_row(path, {"key": "b", "seed": 1})
    assert str(path) in str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert isinstance(info.value, OSError)
    monkeypatch.undo()
    assert [r["key"] for r in read_rows(path)] == ["a"]
    assert path.read_text().endswith("\n")  # the partial write was rolled back


def test_unwritable_directory_raises_store_error(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.geteuid() == 0:  # root ignores permissions: simulate the refusal

            def refuse(*args, **kwargs):
                raise PermissionError(errno.EACCES, "Permission denied")

            monkeypatch.setattr(store.os, "open", refuse)
        with pytest.raises(StoreError, match="Permission denied") as info:
            append_row(locked / "rows.jsonl", {"key": "a", "seed": 0})
        assert "locked" in str(info.value)
    finally:
        locked.chmod(0o700)


def test_write_config_error_names_path(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(store, "atomic_write_text", refuse)
    with pytest.raises(StoreError, match="config.json: Permission denied"):
        store.write_config(tmp_path, "E1", {"a": 1}, "quick")


def test_write_and_read_config(tmp_path):
    store.write_config(tmp_path, "E1", {"widths": [1, 2]}, "quick")
    data = store.read_config(tmp_path)
    assert data == {"experiment": "E1", "config": {"widths": [1, 2]}, "profile": "quick"}


def _append_many(path: str, prefix: str, n: int) -> None:
    for i in range(n):
        append_row(path, {"key": f"{prefix}{i}", "seed": i, "pad": "x" * 300})


def test_concurrent_appends_never_interleave(tmp_path):
    path = str(tmp_path / "rows.jsonl")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, p, 40)) for p in "ab"]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    lines = open(path).read().split("\n")
    assert lines[-1] == ""
    assert len({json.loads(line)["key"] for line in lines[:-1]}) == 80


def test_store_error_is_an_oserror_with_clean_message():
    err = StoreError("cannot write /x: Disk full", path="/x", err=errno.ENOSPC)
    assert str(err) == "cannot write /x: Disk full"
    assert err.filename == "/x"
