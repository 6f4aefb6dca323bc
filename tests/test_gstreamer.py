"""gst:PIPELINE sources through OpenCV's GStreamer backend (Debian's python3-opencv has it).

The end-to-end tests need a cv2 built with GStreamer: they run in the venv of `make test-opencv`
made on Debian's OpenCV (which sets STREAMER_TEST_GSTREAMER=1, so that under CI=true a missing
backend fails instead of skipping) and skip under the pip wheels, which have no GStreamer.  There,
the test that the one-line refusal is given runs instead.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

import cv2
import pytest
from conftest import IN_CI, ROOT, free_port, need, need_tool, rtsp_clip

from streamer import redact
from streamer.config import ConfigError, load
from streamer.gstspec import pipeline_problem
from streamer.sources.gstreamer import element_names, has_gstreamer, missing_element, parse_problem
from streamer.sources.synthetic import SyntheticScene
from support.boxes import iou_xyxy, xywh_to_xyxy
from support.rtsp import RtspServer

HAS_GSTREAMER = has_gstreamer(cv2.getBuildInformation())
EXPECTED = os.environ.get("STREAMER_TEST_GSTREAMER") == "1"
SCENE = SyntheticScene(640, 360, 30.0, moving=False)
TO_APPSINK = "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false"


def need_gstreamer() -> None:
    reason = f"cv2 {cv2.__version__} has no GStreamer backend (Debian's python3-opencv has: make test-opencv)"
    if EXPECTED or (IN_CI and HAS_GSTREAMER):
        need(HAS_GSTREAMER, reason)
    elif not HAS_GSTREAMER:
        pytest.skip(reason)


@pytest.mark.parametrize(
    "uri, problem",
    [
        ("gst:videotestsrc ! " + TO_APPSINK, None),
        ("gst: libcamerasrc ! video/x-raw,width=1280 ! videoconvert ! appsink", None),
        ("gst:", "expected a GStreamer pipeline after gst:"),
        ("gst:videotestsrc ! videoconvert ! autovideosink", "ending in appsink"),
        ("gst:videotestsrc ! appsink ! fakesink", "ending in appsink"),
        ("gst:videotestsrc ! appsinkx", "ending in appsink"),
    ],
)
def test_pipeline_must_end_in_appsink(uri, problem):
    found = pipeline_problem(uri)
    assert (found is None) if problem is None else (problem in found)
    if problem:
        with pytest.raises(ConfigError, match=r"^source\.uri: expected a GStreamer pipeline.*got 'gst:"):
            load(None, {"source.uri": uri}, env={})
    else:
        assert load(None, {"source.uri": uri}, env={}).source.uri == uri


def test_build_information_is_read_for_the_gstreamer_line():
    assert has_gstreamer("Video I/O:\n    FFMPEG:   YES\n    GStreamer:                   YES (1.22.0)\n")
    assert not has_gstreamer("Video I/O:\n    FFMPEG:   YES\n    GStreamer:                   NO\n")
    assert not has_gstreamer("Video I/O:\n    FFMPEG:   YES\n")


def _run_args(source: str, api_url: str, endpoint: str, *extra: str) -> list[str]:
    api = ["--model", "synthetic/1", "--api-url", api_url]
    return ["run", *extra, "--source", source, *api, "--headless", "--zmq", endpoint]


def test_without_gstreamer_a_gst_source_is_one_line_and_exit_2(api_server, spawn):
    if HAS_GSTREAMER:
        pytest.skip(f"cv2 {cv2.__version__} has GStreamer: the refusal cannot happen here")
    run = spawn(_run_args("gst:videotestsrc ! " + TO_APPSINK, api_server.url, "tcp://127.0.0.1:1"))
    assert run.wait(20) == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: source.uri: this OpenCV"), run.stderr
    assert "built without GStreamer" in lines[0] and "python3-opencv" in lines[0] and "JetPack" in lines[0]


def test_videotestsrc_pipeline_gives_frames_and_detections_messages(api_server, spawn, subscriber):
    need_gstreamer()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = subscriber(endpoint)
    pipeline = "gst:videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=15/1 ! " + TO_APPSINK
    run = spawn(_run_args(pipeline, api_server.url, endpoint))
    messages = sub.collect(3, timeout_s=30)
    code, seconds = run.terminate()
    assert len(messages) == 3, run.stderr
    assert json.loads(messages[0][1])["image"] == {"width": 320, "height": 240}
    assert json.loads(messages[0][1])["source"] == pipeline
    assert code == 0 and seconds < 5, (code, seconds, run.stderr)


@pytest.mark.parametrize(
    "pipeline, cause",
    [
        # Off a Pi there is no v4l2h264dec; the rtspsrc in front once made it retry for ever.
        (
            "rtspsrc location=rtsp://viewer:canary-gst-pw-9@127.0.0.1:9/cam ! rtph264depay ! v4l2h264dec ! "
            + TO_APPSINK,
            'no element "v4l2h264dec" (not installed here: gst-inspect-1.0 lists',
        ),
        ("videotestsrc ! ! " + TO_APPSINK, "syntax error (gst-launch-1.0 with the same pipeline"),
        ("videotestsrc colour=red ! " + TO_APPSINK, 'no property "colour" in element'),
    ],
)
def test_a_pipeline_gstreamer_cannot_build_is_one_line_naming_the_cause_and_exit_2(api_server, spawn, pipeline, cause):
    need_gstreamer()
    args = _run_args("gst:" + pipeline, api_server.url, f"tcp://127.0.0.1:{free_port()}", "--duration", "30")
    run = spawn(args)
    assert run.wait(20) == 2, run.stderr[-2000:]
    lines = run.stderr.strip().splitlines()
    assert lines == [lines[-1]], run.stderr  # one line: no retry lines, no GStreamer-CRITICAL blocks
    assert lines[0].startswith("error: source.uri: GStreamer cannot build the gst: pipeline: " + cause), lines[0]
    assert "canary-gst-pw-9" not in run.stderr + run.stdout


def test_a_pipeline_with_a_camera_down_at_start_keeps_trying(api_server, spawn):
    need_gstreamer()
    # A camera on the network that is down when streamer starts is retried, as an rtsp:// source is.
    down = f"gst:rtspsrc location=rtsp://127.0.0.1:{free_port()}/cam protocols=tcp ! decodebin ! " + TO_APPSINK
    run = spawn(_run_args(down, api_server.url, f"tcp://127.0.0.1:{free_port()}", "--duration", "3"))
    assert run.wait(20) == 0, run.stderr[-2000:]
    assert run.stderr.count("cannot open GStreamer pipeline") == 1, run.stderr
    reconnects = re.search(r"stopped: .* (\d+) source reconnects", run.stderr)
    assert reconnects and int(reconnects[1]) >= 2, run.stderr


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory):
    need_gstreamer()
    return rtsp_clip(tmp_path_factory, SCENE)


def _next(sub, topic: bytes, since: float, timeout_s: float) -> dict | None:
    """The first message on ``topic`` published at or after ``since`` (wall clock)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.recv(max(0.01, deadline - time.monotonic()))
        if msg is not None and msg[0] == topic:
            body = json.loads(msg[1])
            if body.get("captured_at", body.get("time", 0)) >= since:
                return body
    return None


def _assert_scene(message: dict) -> None:
    assert message["image"] == {"width": SCENE.width, "height": SCENE.height}
    truth = dict(SCENE.boxes(0))
    assert sorted(p["class"] for p in message["predictions"]) == sorted(truth)
    for pred in message["predictions"]:
        assert iou_xyxy(xywh_to_xyxy(pred), truth[pred["class"]]) >= 0.9


def test_rtspsrc_pipeline_reconnects_after_a_restart_and_the_watchdog_catches_a_freeze(
    camera_clip, api_server, spawn, subscriber, tmp_path
):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = subscriber(endpoint, topic=b"")
    config = tmp_path / "gst.yaml"
    # The GStreamer backend has no read timeout: a frozen camera is the stall watchdog's.
    config.write_text("source:\n  stall_timeout_s: 1.5\noutput:\n  heartbeat_s: 0.5\ninference:\n  max_fps: 30\n")
    with RtspServer(clip=camera_clip) as camera:
        # A password in the URL: the server ignores it, streamer must never print it.
        url = camera.url.replace("rtsp://", "rtsp://viewer:canary-gst-pw-41@")
        pipeline = f"gst:rtspsrc location={url} latency=0 protocols=tcp ! decodebin ! " + TO_APPSINK
        run = spawn(_run_args(pipeline, api_server.url, endpoint, "-c", str(config)))
        first = _next(sub, b"detections", 0, 30)
        assert first is not None, run.stderr + camera.log()
        _assert_scene(first)
        assert first["source"] == pipeline.replace("canary-gst-pw-41", "***")
        assert first["name"] == "127-0-0-1-cam"  # the location's host and path, no credentials
        assert "canary-gst-pw-41" not in json.dumps(first)

        camera.restart()  # the camera goes away and comes back on the same URL
        back = time.time()
        message = _next(sub, b"detections", back, 20)
        assert message is not None, "no frames after the restart\n" + run.stderr[-3000:]
        _assert_scene(message)

        camera.freeze()  # the socket stays open, no data: the read blocks
        time.sleep(3.0)
        camera.thaw()
        thawed = time.time()
        message = _next(sub, b"detections", thawed, 20)
        assert message is not None, "no frames after the freeze\n" + run.stderr[-3000:]
        status = _next(sub, b"status", time.time(), 5)
        code, seconds = run.terminate()
    assert status is not None
    counters = status["counters"]
    assert counters["source_reconnects"] >= 1 and counters["source_stalls"] >= 1, counters
    assert code == 0 and seconds < 5, (code, seconds, run.stderr[-2000:])
    assert "Traceback" not in run.stderr
    assert "canary-gst-pw-41" not in run.stderr + run.stdout


def test_every_recipe_in_the_cameras_doc_is_a_valid_source(tmp_path, monkeypatch):
    # The recipes' placeholder password ("password") would be masked in every later test's text.
    monkeypatch.setattr(redact, "_secrets", set(redact._secrets))
    doc = (ROOT / "docs" / "cameras.md").read_text()
    recipes = re.findall(r"--source '(gst:[^']+)'", doc)
    assert len(recipes) == 7, recipes
    for uri in recipes:
        if uri != "gst:PIPELINE":
            assert load(None, {"source.uri": uri}, env={}).source.uri == uri
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if "fourcc" in b]
    path = tmp_path / "usb.yaml"
    path.write_text(block)
    source = load(path, env={}).source
    assert (source.fourcc, source.width, source.height, source.fps) == ("MJPG", 1920, 1080, 30.0)


@pytest.mark.parametrize(
    "pipeline, names",
    [
        ("videotestsrc ! " + TO_APPSINK, ["videotestsrc", "videoconvert", "appsink"]),
        ("v4l2src device=/dev/video0 ! image/jpeg,width=1920 ! jpegdec ! appsink", ["v4l2src", "jpegdec", "appsink"]),
        (
            "videotestsrc ! tee name=t t. ! queue ! appsink t. ! queue ! fakesink",
            ["videotestsrc", "tee", "queue", "appsink", "fakesink"],
        ),
        ('rtspsrc location="rtsp://a b" ! decodebin name=d d. ! appsink', ["rtspsrc", "decodebin", "appsink"]),
    ],
)
def test_element_names_are_read_from_the_pipeline_text(pipeline, names):
    assert element_names(pipeline) == names


def test_without_python3_gi_gst_inspect_names_the_missing_element(monkeypatch):
    """The fallback where gi is not importable (a venv without --system-site-packages)."""
    need_tool("gst-inspect-1.0")
    monkeypatch.setitem(sys.modules, "gi", None)  # import gi now raises ImportError
    pipeline = "videotestsrc ! v4l2h264dec ! " + TO_APPSINK
    assert parse_problem(pipeline) is None
    assert missing_element(pipeline) == 'no element "v4l2h264dec"'
    assert missing_element("videotestsrc ! " + TO_APPSINK) is None
