"""The live pipeline, in this process, against a real local API server that misbehaves.

The server is switched through 503 and 429 with Retry-After, hanging answers, refused
connections, an HTML page and broken JSON, and back to healthy after each.  The pipeline
must recover every time, never crash, and count exactly what the server served.
"""

from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest
from conftest import Subscriber, free_port

from streamer.api.client import DetectionClient
from streamer.live.dispatch import InferenceSettings
from streamer.live.pipeline import Outputs, Pipeline
from streamer.outputs.overlay import status_band_height
from streamer.outputs.recorder import Recorder
from streamer.outputs.zmq_feed import ZmqPublisher
from streamer.sources.open import SyntheticSource
from streamer.standin.server import ApiServer, Fault
from support.running import Running, streamer_threads, wait_until

BACKOFF_MAX_S = 1.0
CLIENT_TIMEOUT_S = 0.8


PHASES = [
    # (the fault, what streamer counts it as, whether the breaker should open)
    (Fault(503, "model loading", retry_after="1", label="503"), "http 503", True),
    (Fault(429, "rate limited", retry_after="1", label="429"), "http 429", True),
    (Fault(504, "slow", hang_s=2.5, label="hang"), "timeout", True),
    (Fault(200, raw_body=b"<html><body><h1>502 Bad Gateway</h1></body></html>", label="html"), "malformed", False),
    (Fault(200, raw_body=b'{"predictions": [{"x": 1,', label="badjson"), "malformed", False),
]


def test_api_fault_walk_recovers_every_time_and_counts_match_the_server(tmp_path):
    port = free_port()
    server = ApiServer("127.0.0.1", port).start()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    recording = tmp_path / "preview.avi"
    publisher = ZmqPublisher(endpoint)
    status = Subscriber(endpoint, b"status")
    run = Running(server.url, Outputs(outputs=[publisher], recorder=Recorder(str(recording), 30.0)))
    heartbeats: list[dict] = []
    try:
        assert wait_until(lambda: run.stats.results >= 3, 15), "no results from a healthy server"
        for fault, _kind, opens in PHASES:
            server.set_fault(fault)
            assert wait_until(lambda f=fault: server.fault_counts.get(f.label, 0) >= 4, 20), fault.label
            if opens:
                assert wait_until(lambda: run.stats.api_state == "down", 10), (fault.label, run.stats.api_state)
                while status.recv(0) is not None:  # heartbeats from before the outage
                    pass
                heartbeats += [json.loads(m[1]) for m in status.collect(2, timeout_s=3)]
            before = run.stats.results
            server.set_fault(None)
            # Back within one backoff interval (or the Retry-After) plus a request.
            limit_s = max(BACKOFF_MAX_S, 1.0) * 1.3 + CLIENT_TIMEOUT_S + 1.0
            assert wait_until(lambda b=before: run.stats.results > b, limit_s), (
                fault.label,
                run.pipeline.snapshot().line(),
            )
            assert run.stats.api_state == "ok"
        # Refused connections: the server goes away, then comes back on the same port.
        server.stop()
        assert wait_until(lambda: run.stats.api_state == "down", 10)
        refused_since, opened = time.monotonic(), run.stats.api_failures.get("unreachable", 0)
        assert opened >= 3
        wait_until(lambda: run.stats.api_failures.get("unreachable", 0) >= opened + 4, 10, "probes to the server")
        # Probes, not a request per frame: one per backoff interval (0.2, 0.4, 0.8, 1 s, give or
        # take a fifth), so four take over 1 s (one may be a request in flight as it opened).
        assert time.monotonic() - refused_since >= 1.0, run.stats.api_failures
        before = run.stats.results
        server = ApiServer("127.0.0.1", port).start()
        assert wait_until(lambda: run.stats.results > before, BACKOFF_MAX_S * 1.3 + 1.0)
        assert wait_until(lambda: run.stats.results > before + 5, 10)
    finally:
        run.finish()
        status.close()
        wait_until(lambda: server.in_flight == 0, 5)  # hung requests the server still sits on end first
        server.stop()
    stats = run.stats
    for _fault, kind, _ in PHASES:
        assert stats.api_failures.get(kind, 0) >= 4, (kind, stats.api_failures)
    assert heartbeats and all(h["type"] == "status" and h["api_state"] == "down" for h in heartbeats)
    assert {"http 503", "http 429", "timeout"} <= set(heartbeats[-1]["counters"]["api_failures"])
    assert streamer_threads() == []
    check_stale_marks(recording)


def test_counters_match_what_the_server_served():
    with ApiServer("127.0.0.1", 0) as server:
        run = Running(server.url, probe_after_failures=3)
        try:
            assert wait_until(lambda: run.stats.results >= 3, 15)
            for fault, _, _ in PHASES:
                server.set_fault(Fault(**{**fault.__dict__, "remaining": 4}))
                assert wait_until(lambda f=fault: server.fault_counts.get(f.label, 0) >= 4, 20), fault.label
                assert wait_until(lambda: run.stats.api_state == "ok" and server._fault is None, 10)
        finally:
            run.finish()
        # The last hung request is counted by the server once it answers.
        wait_until(lambda: server.in_flight == 0, 5, lambda: f"the server to answer its {server.in_flight} requests")
        served = dict(server.fault_counts)
        good = server.counts.get(200, 0) - served["html"] - served["badjson"]
    stats = run.stats
    assert served == {"503": 4, "429": 4, "hang": 4, "html": 4, "badjson": 4}
    assert stats.api_failures == {"http 503": 4, "http 429": 4, "timeout": 4, "malformed": 8}
    # Every request streamer sent was seen by the server, and every good answer became a result
    # (one may still have been in flight when the pipeline stopped).
    assert stats.requests == sum(server.counts.values())
    assert good - 1 <= stats.results <= good


def check_stale_marks(recording) -> None:
    """The preview kept drawing while the API was down, and marked the result as stale."""
    cap = cv2.VideoCapture(str(recording))
    frames, stale = 0, 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames += 1
        band = status_band_height(image)
        notice = image[band + 2 : 2 * band - 2, : image.shape[1] // 2].reshape(-1, 3).astype(int)
        reddish = (notice[:, 2] > 90) & (notice[:, 2] > notice[:, 1] + 50) & (notice[:, 2] > notice[:, 0] + 50)
        stale += reddish.mean() > 0.5
    cap.release()
    assert frames > 30 * 10  # the walk takes well over 10 s; the preview never stopped
    assert 0 < stale < frames  # marked while the API was down, and not all the time


@pytest.mark.parametrize("size", [(640, 360), (320, 240)])
def test_a_result_for_a_frame_of_another_size_is_scaled_to_the_shown_frame(size):
    from streamer.types import Detection, Frame, Result

    stop = threading.Event()
    shown = []

    class Catch:
        def write(self, image, captured_mono=None):
            shown.append(image)

        def close(self, timeout_s=0.0):
            pass

    with DetectionClient("http://127.0.0.1:9", "m/1", None) as client:  # never started: no request
        pipeline = Pipeline(
            SyntheticSource(64, 64, 30.0, stop), client, Outputs(recorder=Catch()), InferenceSettings(), stop
        )
    frame = Frame("cam", 1, time.time(), time.monotonic(), np.zeros((size[1], size[0], 3), np.uint8))
    result = Result(
        "cam",
        0,
        time.time(),
        time.monotonic(),
        1280,
        720,
        detections=(Detection(640, 360, 200, 100, 0.9, "a"),),
        model="m/1",
    )
    pipeline.results.offer(result)
    pipeline.results.drain()  # released: the newest result, as the preview draws it
    pipeline._show(frame, time.monotonic())
    image = shown[0]
    # The box (a 200x100 rectangle at the centre of a 1280x720 frame) lands at the centre
    # of the smaller frame, scaled: its left edge is drawn at x = (640 - 100) * w / 1280.
    row = image[size[1] // 2]
    coloured = np.flatnonzero(row.max(axis=1) > 0)
    assert coloured.size and abs(coloured[0] - 540 * size[0] / 1280) <= 3, coloured[:3]


def test_the_watchdog_counts_deliberately_skipped_calls_as_healthy():
    """A spent call budget or a still scene (motion gate) makes no call: that is not a fault,
    so systemd's watchdog must not restart streamer for it."""
    stop = threading.Event()
    with DetectionClient("http://127.0.0.1:9", "m/1", None) as client:  # never started: no request
        pipeline = Pipeline(SyntheticSource(64, 64, 30.0, stop), client, Outputs(), InferenceSettings(), stop)
    s, now = pipeline.stats, 1000.0
    s.last_frame_mono, s.last_api_answer_mono = now - 1, now - 120  # the last answer: two minutes ago
    assert not pipeline.healthy(now, 60.0)
    s.last_skip_mono = now - 2  # the budget (or the gate) skipped a call two seconds ago
    assert pipeline.healthy(now, 60.0)
    s.last_frame_mono = now - 61  # but no frames: unhealthy
    assert not pipeline.healthy(now, 60.0)


def test_a_full_disk_pauses_the_jsonl_file_and_the_recording_never_the_pipeline(
    api_server, small_disk, monkeypatch, caplog
):
    """Issue 15: the disk under output.jsonl and output.record fills up (a real tmpfs).  Each
    pauses with one warning; frames are read and results published on the feed all along; when
    space returns, both resume."""
    import logging
    import os

    import streamer.outputs.jsonl as jsonl_module
    import streamer.outputs.recorder as recorder_module
    from streamer.outputs.jsonl import JsonlWriter
    from support.smallfs import fill

    monkeypatch.setattr(jsonl_module, "RETRY_S", 0.3)
    monkeypatch.setattr(recorder_module, "SPACE_CHECK_S", 0.1)
    disk = small_disk(32 * 1024)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    feed = Subscriber(endpoint)
    writer = JsonlWriter(str(disk / "det.jsonl"))
    recorder = Recorder(str(disk / "rec.avi"), 30.0, segment_s=2.0, min_free_bytes=2 * 2**20)
    run = Running(api_server.url, Outputs(outputs=[ZmqPublisher(endpoint), writer], recorder=recorder))
    try:
        with caplog.at_level(logging.INFO):
            assert wait_until(lambda: run.stats.published >= 3 and recorder.current is not None, 15)
            filler = fill(disk / "filler")
            assert wait_until(lambda: writer.paused and recorder.paused, 10), (writer.paused, recorder.paused)
            read, published = run.stats.frames_read, run.stats.published
            while feed.recv(0) is not None:
                pass
            wait_until(
                lambda: run.stats.frames_read > read + 20 and run.stats.published > published + 3,
                10,
                lambda: f"frames read and results published with the disk full: {run.stats.line(0, None)}",
            )
            assert feed.recv(5) is not None  # the feed goes on
            wait_until(lambda: writer.dropped > 3 and recorder.skipped > 20, 10, "lines and frames dropped, not queued")
            os.unlink(filler)
            lines = len((disk / "det.jsonl").read_text().splitlines())
            assert wait_until(lambda: not writer.paused and not recorder.paused, 10)
            assert wait_until(lambda: len((disk / "det.jsonl").read_text().splitlines()) > lines + 3, 10)
        run.finish()
    finally:
        feed.close()
        if run.thread.is_alive():
            run.stop.set()
            run.thread.join(5)
    assert run.thread.is_alive() is False and streamer_threads() == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and str(disk) in r.getMessage()]
    assert len(warnings) == 2, warnings  # one each
    assert all(json.loads(line) for line in (disk / "det.jsonl").read_text().splitlines())  # whole lines only


def test_an_api_back_after_a_long_refused_outage_is_used_again_within_3_s():
    """Issue 21: connections refused for 20 s, with the default backoff (0.5 s doubling to 30 s,
    which by then would wait 8 to 16 s between probes): probes that cannot connect cost nothing,
    so they go every second, and results resume within 3 s of the API's return."""
    from streamer.live.dispatch import InferenceSettings

    server = ApiServer("127.0.0.1", 0).start()
    port = int(server.url.rsplit(":", 1)[1])
    run = Running(server.url, settings=InferenceSettings(max_fps=10.0), backoff_max_s=30.0, backoff_initial_s=0.5)
    try:
        assert wait_until(lambda: run.stats.results > 3, 10)
        server.stop()
        down_at = time.monotonic()
        assert wait_until(lambda: run.stats.api_state == "down", 10)
        # The outage lasts until streamer has probed the closed port 18 times: about 20 s at one
        # probe a second (the old doubling backoff would have made about 6 probes by then).
        assert wait_until(lambda: run.stats.api_failures.get("unreachable", 0) >= 18, 30), run.stats.api_failures
        outage_s = time.monotonic() - down_at
        before = run.stats.results
        server = ApiServer("127.0.0.1", port).start()
        back_at = time.monotonic()
        assert wait_until(lambda: run.stats.results > before, 10)
        recovery_s = time.monotonic() - back_at
        print(
            f"results resumed {recovery_s:.2f} s after the API came back from {outage_s:.0f} s of refused connections"
        )
        assert outage_s >= 12, outage_s  # long enough for the old backoff to wait 8 s or more
        assert recovery_s < 3, recovery_s
        assert run.stats.api_failures.get("unreachable", 0) <= 3 + outage_s + 5  # about one probe a second
    finally:
        run.finish()
        server.stop()
