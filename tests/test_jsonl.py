"""The JSONL writer: rotation by size, and a full disk (a real one: a small tmpfs) that pauses
the live writer with one warning and resumes when space returns."""

from __future__ import annotations

import json
import logging
import os

import pytest

import streamer.outputs.jsonl as jsonl_module
from streamer.errors import OutputError
from streamer.outputs.jsonl import JsonlWriter
from support.running import wait_until
from support.smallfs import fill


@pytest.fixture
def tiny_fs(small_disk):
    return small_disk(1024)


def _line(n: int, pad: int = 90) -> bytes:
    return json.dumps({"n": n, "pad": "x" * pad}).encode()


def _numbers(path) -> list[int]:
    return [json.loads(line)["n"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("keep", [0, 1, 3])
def test_rotation_keeps_keep_files_each_under_the_cap_with_the_newest_lines(tmp_path, keep, monkeypatch):
    rotations = []
    rotate = JsonlWriter._rotate
    monkeypatch.setattr(JsonlWriter, "_rotate", lambda writer: (rotate(writer), rotations.append(1)))
    path = tmp_path / "det.jsonl"
    writer = JsonlWriter(str(path), background=False, max_bytes=10_000, keep=keep)
    for n in range(1000):  # about 100 kB: ten files' worth
        writer.send(_line(n))
    writer.close()
    files = [path] + [tmp_path / f"det.jsonl.{i}" for i in range(1, keep + 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in files)
    assert all(0 < p.stat().st_size <= 10_000 for p in files)
    kept = [n for p in reversed(files) for n in _numbers(p)]  # oldest file first
    assert kept == list(range(1000 - len(kept), 1000))  # whole lines, in order, the newest ones
    assert len(rotations) >= 9


def test_an_existing_file_over_the_cap_is_rotated_at_the_first_line(tmp_path):
    path = tmp_path / "det.jsonl"
    path.write_bytes(_line(0) + b"\n" + _line(1) + b"\n")
    writer = JsonlWriter(str(path), background=False, max_bytes=150, keep=1)
    writer.send(_line(2))
    writer.close()
    assert _numbers(path) == [2] and _numbers(tmp_path / "det.jsonl.1") == [0, 1]


def test_a_full_disk_pauses_the_live_writer_with_one_warning_and_it_resumes(tiny_fs, monkeypatch, caplog):
    monkeypatch.setattr(jsonl_module, "RETRY_S", 0.3)
    path = tiny_fs / "det.jsonl"
    writer = JsonlWriter(str(path))
    with caplog.at_level(logging.INFO, logger="streamer.outputs.jsonl"):
        writer.send(_line(0))
        writer.flush()
        filler = fill(tiny_fs / "filler")
        for n in range(1, 40):  # the first big one fits in part, in the page the file already has
            writer.send(_line(n, pad=5000))
            writer.flush()
        assert writer.paused and writer.dropped == 39
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [
            f"output.jsonl: cannot write {path}: No space left on device; lines are dropped (and counted) "
            "until it can be written again (tried every 0.3 s); free some space. Detection goes on."
        ]
        assert _numbers(path) == [0]  # the line cut short by the full disk was cut off again
        os.unlink(filler)
        assert wait_until(lambda: writer.send(_line(100)) and (writer.flush() or not writer.paused), 5, 0.1)
    writer.close()
    numbers = _numbers(path)
    assert numbers[0] == 0 and numbers[-1] == 100 and len(numbers) >= 2
    assert any("writing" in r.getMessage() and "again" in r.getMessage() for r in caplog.records)


def test_offline_a_full_disk_is_still_an_error_naming_the_file(tiny_fs):
    """streamer video --jsonl: the file is the point of the run, so a failed write stops it."""
    fill(tiny_fs / "filler")
    writer = JsonlWriter(str(tiny_fs / "det.jsonl"), append=False, what="--jsonl", background=False)
    with pytest.raises(OutputError, match=r"--jsonl: cannot write .*det.jsonl: No space left on device"):
        for n in range(10):
            writer.send(_line(n, pad=5000))
    writer.close()
