"""The recorder: segments named by their start, a cap on their total size, and a disk that runs
out of space (a real one: a small tmpfs) pausing the recording until space returns."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

import streamer.outputs.recorder as recorder_module
from streamer.outputs.recorder import Recorder
from support.clips import readable_frames
from support.smallfs import fill, read_only


def _frame(n: int) -> np.ndarray:
    image = np.random.default_rng(n).integers(0, 255, (120, 160, 3), dtype=np.uint8)  # noise: big JPEGs
    return image


def _record(recorder: Recorder, seconds: float, fps: float = 8.0, start: int = 0) -> None:
    # 8 fps: n / 8 is exact in binary, so the timeline holds exactly one frame per frame sent.
    for n in range(start, start + int(seconds * fps)):
        recorder.write(_frame(n), captured_mono=1000.0 + n / fps)


def test_segments_are_cut_by_timeline_and_named_by_their_start(tmp_path):
    recorder = Recorder(str(tmp_path / "cam.avi"), 8.0, segment_s=1.0)
    _record(recorder, 3.5)
    recorder.close()
    files = recorder.segments()
    assert {p.name for p in files} == {p.name for p in tmp_path.iterdir()}, "nothing else written"
    assert not (tmp_path / "cam.avi").exists() and len(files) == 4
    assert all(p.name.startswith("cam-") and p.name.endswith("Z.avi") or "Z-" in p.name for p in files)
    assert [readable_frames(p) for p in files] == [8, 8, 8, 4]  # oldest first: 1 s each, then the rest


def test_the_oldest_segments_go_when_all_take_more_than_the_cap(tmp_path):
    probe = Recorder(str(tmp_path / "probe.avi"), 8.0)
    _record(probe, 1.0)
    probe.close()
    one_segment = (tmp_path / "probe.avi").stat().st_size
    recorder = Recorder(str(tmp_path / "cam.avi"), 8.0, segment_s=1.0, max_bytes=int(2.5 * one_segment))
    _record(recorder, 6.0)
    recorder.close()
    files = recorder.segments()
    assert len(files) == 3, [p.name for p in files]  # two whole ones fit, plus the one being written
    assert sum(p.stat().st_size for p in files) <= 3.5 * one_segment
    assert [readable_frames(p) for p in files] == [8, 8, 8]  # the newest: seconds 4-6


def test_one_file_without_segments_keeps_its_name(tmp_path):
    recorder = Recorder(str(tmp_path / "cam.avi"), 8.0)
    _record(recorder, 2.0)
    recorder.close()
    assert [p.name for p in tmp_path.iterdir()] == ["cam.avi"] and readable_frames(tmp_path / "cam.avi") == 16


def test_low_space_pauses_the_recording_with_one_warning_and_it_resumes_in_a_new_file(small_disk, monkeypatch, caplog):
    monkeypatch.setattr(recorder_module, "SPACE_CHECK_S", 0.0)
    disk = small_disk(4096)
    recorder = Recorder(str(disk / "cam.avi"), 8.0, min_free_bytes=512 * 1024)
    with caplog.at_level(logging.INFO, logger="streamer.outputs.recorder"):
        _record(recorder, 1.0)
        filler = fill(disk / "filler", leave_bytes=256 * 1024)
        _record(recorder, 2.0, start=8)
        assert recorder.paused and recorder.skipped == 16
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "recording paused until 0.5 MB are free (detection goes on)" in warnings[0]
        assert readable_frames(disk / "cam.avi") == 8  # closed while there was room: a whole file
        os.unlink(filler)
        _record(recorder, 1.0, start=24)
    recorder.close()
    assert not recorder.paused and recorder.current != str(disk / "cam.avi")
    assert readable_frames(recorder.current) == 8
    assert any("recording resumes in a new file" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", ["cam.mkv", "cam"])
def test_a_name_without_a_video_suffix_is_refused(tmp_path, name):
    from streamer.errors import UsageError

    with pytest.raises(UsageError, match="expected a file name ending in .mp4 or .avi"):
        Recorder(str(tmp_path / name), 8.0, segment_s=1.0)


def test_a_size_cap_without_segments_is_refused_naming_both_keys(spawn, tmp_path):
    (tmp_path / "c.yaml").write_text("output:\n  record_max_mb: 100\n")
    proc = spawn(["run", "-c", "c.yaml", "--source", "synthetic", "--model", "a/1", "--record", "r.avi", "--headless"])
    assert proc.wait(20) == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: output.record_max_mb: needs output.record_segment_s (only whole segments are deleted) "
        "(from c.yaml); "
        "set record_segment_s, e.g. 600 for ten-minute files"
    )


@pytest.fixture
def read_only_disk(small_disk):
    disk = small_disk(1024)
    assert read_only(disk), "cannot remount the tmpfs read-only"
    return disk


def test_a_folder_that_cannot_be_written_is_refused_at_once_with_the_reason(read_only_disk):
    from streamer.errors import UsageError

    with pytest.raises(UsageError) as refused:
        Recorder(str(read_only_disk / "cam.mp4"), 8.0)
    assert str(refused.value) == (
        f"output.record: cannot write {read_only_disk / 'cam.mp4'}: Read-only file system "
        "(record to a folder on a writable disk that this user may write to)"
    )


@pytest.mark.parametrize("where", ["read-only disk", "/sys"])
def test_run_with_a_recording_that_cannot_be_written_stops_with_one_line_and_exit_2(spawn, request, api_server, where):
    """Not a recording paused for space (/sys has none free) and an exit 0, nor a line with no reason."""
    if where == "/sys":
        path, reason = "/sys/streamer-test.mp4", "Permission denied"
    else:
        path, reason = str(request.getfixturevalue("read_only_disk") / "cam.mp4"), "Read-only file system"
    args = ["run", "--source", "synthetic", "--model", "synthetic/1", "--api-url", api_server.url, "--headless"]
    run = spawn([*args, "--record", path, "--duration", "3"])
    assert run.wait(20) == 2, run.stderr
    assert run.stderr.strip().splitlines() == [
        f"error: output.record: cannot write {path}: {reason} "
        "(record to a folder on a writable disk that this user may write to)"
    ], run.stderr
