"""Logs made for a journal: status lines every 60 s when stderr is not a terminal, an outage
logged when it starts, at each doubling and when it ends, no OpenCV or FFmpeg noise, the real
cause of a failed open, and counters that agree with the log."""

from __future__ import annotations

import io
import logging
import re

from conftest import free_port

from streamer.commands.run import status_interval_s
from streamer.config import load
from streamer.retry import FaultLog


def test_an_outage_is_logged_at_its_start_at_each_doubling_and_at_its_end(caplog, monkeypatch):
    import streamer.retry as backoff_module

    clock = [5000.0]
    monkeypatch.setattr(backoff_module.time, "monotonic", lambda: clock[0])
    faults = FaultLog(logging.getLogger("test.outage"), "source cam")
    with caplog.at_level(logging.INFO, logger="test.outage"):
        for _ in range(3600):  # an hour down, a retry a second
            faults.fault("connection refused")
            clock[0] += 1.0
        faults.recovered()
    lines = [r.getMessage() for r in caplog.records]
    lengths = [int(m[1]) for line in lines if (m := re.search(r"failures in (\d+) s", line))]
    assert lines[0] == "source cam: connection refused (retrying with backoff)"
    assert lengths == [10, 20, 40, 80, 160, 320, 640, 1280, 2560]  # each doubling
    assert lines[-1] == "source cam: recovered after 3600 failures in 3600.0 s"
    assert len(lines) == 11


def test_the_status_interval_is_60_s_in_a_journal_and_5_s_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert status_interval_s(load(None, env={})) == 60.0
    monkeypatch.setattr("sys.stderr", Terminal())
    assert status_interval_s(load(None, env={})) == 5.0
    assert status_interval_s(load(None, {"output.status_interval_s": 12}, env={})) == 12.0


def test_a_camera_that_refuses_says_why_once_without_opencv_noise_and_counts_every_retry(api_server, spawn):
    """The journal of a camera that is down: streamer's own line names the cause, OpenCV and
    FFmpeg say nothing, no status line in 8 s (60 s in a journal), and the stop line's
    reconnects match the attempts (it said 0 after 9 retries: failed opens were not counted)."""
    port = free_port()
    proc = spawn(
        ["run", "--source", f"rtsp://127.0.0.1:{port}/cam", "--headless", "--model", "synthetic/1"]
        + ["--api-url", api_server.url, "--jsonl", "out.jsonl"]  # an output: no "results go nowhere" warning
    )
    assert proc.wait_for_log("cannot open stream", 15), proc.stderr
    assert proc.wait_for_log("still failing", 20), proc.stderr  # 10 s into the outage
    code, _ = proc.terminate()
    assert code == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert not [line for line in lines if "WARN:" in line or "ERROR:" in line or "[tcp @" in line], proc.stderr
    warnings = [line for line in lines if " WARNING " in line]
    assert warnings[0].endswith(
        f"source rtsp://127.0.0.1:{port}/cam: cannot open stream rtsp://127.0.0.1:{port}/cam: connection refused "
        f"by 127.0.0.1:{port}: nothing listens there (is the camera on, the port right?) (retrying with backoff)"
    )
    assert len(warnings) == 2, proc.stderr  # the start, and 10 s later
    failures = int(re.search(r"still failing, (\d+) failures", warnings[1])[1])
    reconnects = int(re.search(r"(\d+) source reconnects", next(x for x in lines if "stopped:" in x))[1])
    assert reconnects >= failures - 1 >= 3, proc.stderr  # each retry after the first open is a reconnect
    assert not [line for line in lines if "| newest result" in line], "no status line within 60 s in a journal"
