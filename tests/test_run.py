"""``streamer run`` end to end, as a subprocess, against real servers on 127.0.0.1."""

import json
import re
import signal
import time

import cv2
import pytest
from conftest import clean_env, free_port, write_clip

from streamer.sources.synthetic import SyntheticScene
from streamer.standin.server import ApiServer, Fault
from support.boxes import iou_xyxy, xywh_to_xyxy
from support.waiting import wait_until

SCENE = SyntheticScene(1280, 720, 30.0)


def run_args(api_url, *extra):
    # --max-fps 30: the local API costs nothing, and these tests count on results coming fast.
    return [
        "run",
        "--source",
        "synthetic",
        "--model",
        "synthetic/1",
        "--api-url",
        api_url,
        "--headless",
        "--max-fps",
        "30",
        *extra,
    ]


def assert_matches_truth(message, scene=SCENE):
    """Every box lands on the synthetic ground truth of its own frame, in original pixels."""
    truth = dict(scene.boxes(message["frame_id"]))
    assert sorted(p["class"] for p in message["predictions"]) == sorted(truth)
    for pred in message["predictions"]:
        assert iou_xyxy(xywh_to_xyxy(pred), truth[pred["class"]]) >= 0.9, (message["frame_id"], pred)


def test_synthetic_to_served_api_to_zmq_subscriber(spawn, subscriber):
    api_port, zmq_port = free_port(), free_port()
    server = spawn(["serve", "--port", str(api_port)], name="serve")
    assert server.wait_for_log("serving", 15), server.stderr
    endpoint = f"tcp://127.0.0.1:{zmq_port}"
    sub = subscriber(endpoint)
    run = spawn(run_args(f"http://127.0.0.1:{api_port}", "--zmq", endpoint, "--duration", "60"))
    messages = sub.collect(15, timeout_s=30)
    assert len(messages) == 15, run.stderr
    previous = -1
    for topic, payload in messages:
        assert topic == b"detections"
        msg = json.loads(payload.decode("utf-8"))
        assert msg["source"] == "synthetic" and msg["model"] == "synthetic/1"
        assert msg["image"] == {"width": 1280, "height": 720}  # the frame's size, not the upload's
        assert msg["frame_id"] > previous  # newest first, never a stale frame
        previous = msg["frame_id"]
        assert msg["captured_at"] <= msg["sent_at"] <= msg["received_at"] <= msg["published_at"]
        assert abs(msg["published_at"] - time.time()) < 5
        assert_matches_truth(msg)
    code, seconds = run.terminate(signal.SIGTERM)
    assert code == 0 and seconds < 3, run.stderr
    assert "stopped:" in run.stderr


def test_sigint_also_exits_cleanly(api_server, spawn):
    run = spawn(run_args(api_server.url))
    wait_until(lambda: api_server.counts.get(200, 0) >= 3, 15, lambda: f"three answers\n{run.stderr}")
    code, seconds = run.terminate(signal.SIGINT)
    assert code == 0 and seconds < 3


def test_sigterm_with_a_request_in_flight_exits_within_3_s(spawn):
    with ApiServer("127.0.0.1", 0, latency_ms=20000) as never_answers:
        run = spawn(run_args(never_answers.url))
        wait_until(lambda: never_answers.in_flight >= 1, 15, lambda: f"a request in flight\n{run.stderr}")
        code, seconds = run.terminate(signal.SIGTERM)
    assert code == 0 and seconds < 3, (code, seconds, run.stderr)


def test_wrong_key_exits_2_with_one_line_and_no_key(spawn):
    api_port = free_port()
    server = spawn(["serve", "--port", str(api_port), "--api-key", "the-right-key"], name="serve")
    assert server.wait_for_log("serving", 15)
    canary = "canary-wrong-key-5f2a9"
    run = spawn(run_args(f"http://127.0.0.1:{api_port}"), env=clean_env(ROBOFLOW_API_KEY=canary))
    code = run.wait(20)
    assert code == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "API key was refused" in errors[0] and "401" in errors[0]
    assert canary not in run.stderr + run.stdout


def test_no_key_for_a_server_that_needs_one_exits_2_with_the_key_hint(spawn):
    """A self-hosted server that needs a key answers 400 "Missing api_key": not a frame to
    skip for ever, but one line and exit 2, as a service manager should see it."""
    with ApiServer("127.0.0.1", 0, api_key="the-right-key") as server:
        run = spawn(run_args(server.url))
        assert run.wait(20) == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {server.url} needs an API key and none was sent (400: Missing api_key); "
        "check $ROBOFLOW_API_KEY or api.api_key_file"
    ], run.stderr
    assert server.counts.get(400, 0) <= 8  # no more than the requests already in flight


def test_unknown_model_exits_2_naming_it(spawn):
    with ApiServer("127.0.0.1", 0, models={"synthetic/1"}) as server:
        run = spawn(["run", "--source", "synthetic", "--model", "nothere/7", "--api-url", server.url, "--headless"])
        assert run.wait(20) == 2
    assert "model nothere/7 was not found" in run.stderr


def test_frames_refused_with_400_are_skipped_without_hammering_the_api(spawn):
    with ApiServer("127.0.0.1", 0) as server:  # every frame is a 400 (a missing key is exit 2: see above)
        server.set_fault(Fault(status=400, message="Could not decode the image"))
        run = spawn(run_args(server.url))
        assert run.wait_for_log("frame skipped", 15), run.stderr
        first = time.monotonic()
        wait_until(lambda: server.counts.get(400, 0) >= 6, 15, lambda: f"six refused frames\n{run.stderr}")
        took_s = time.monotonic() - first
        code, _ = run.terminate()
        refused = server.counts.get(400, 0)
    assert code == 0
    # Three at once, then paced by the backoff (0.5, 1, 2 s): at 30 fps unpaced, six take 0.2 s.
    assert took_s >= 1.5 and refused <= 8, (took_s, refused)
    assert "Could not decode the image" in run.stderr


def test_a_503_spell_is_survived(api_server, spawn, subscriber):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = subscriber(endpoint)
    api_server.set_fault(Fault(status=503, message="model loading", retry_after="1"))
    run = spawn(run_args(api_server.url, "--zmq", endpoint))
    assert run.wait_for_log("answered 503", 20), run.stderr
    first = time.monotonic()
    wait_until(lambda: api_server.counts.get(503, 0) >= 5, 15, lambda: f"five 503s\n{run.stderr}")
    took_s = time.monotonic() - first
    assert sub.recv(0.2) is None  # nothing published while the API fails
    # Three to open the breaker, then one probe a Retry-After (1 s): hammered, five take 0.2 s.
    assert took_s >= 1.5 and api_server.counts.get(503, 0) <= 6, (took_s, api_server.counts)
    api_server.set_fault(None)
    healed = time.monotonic()
    first = sub.recv(10)
    assert first is not None, run.stderr
    assert time.monotonic() - healed < 5
    msg = json.loads(first[1])
    assert msg["captured_at"] > time.time() - 3  # the retry used a fresh frame
    assert run.wait_for_log("recovered after", 5)
    assert run.popen.poll() is None
    code, _ = run.terminate()
    assert code == 0


def test_video_file_source_plays_and_ends_by_itself(api_server, spawn, tmp_path):
    scene = SyntheticScene(960, 540, 20.0)
    clip = write_clip(tmp_path / "clip.avi", scene, 60)
    started = time.monotonic()
    run = spawn(
        [
            "run",
            "--source",
            str(clip),
            "--model",
            "synthetic/1",
            "--api-url",
            api_server.url,
            "--headless",
            "--jsonl",
            "out.jsonl",
            "--record",
            "annotated.avi",
            "--max-fps",
            "30",
        ]
    )
    assert run.wait(30) == 0, run.stderr
    assert time.monotonic() - started >= 2.7  # 60 frames at 20 fps: played like a camera, not at once
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) >= 15  # the local API keeps up with most of the 20 fps
    for line in lines:
        msg = json.loads(line)
        assert msg["source"] == str(clip) and msg["image"] == {"width": 960, "height": 540}
        assert_matches_truth(msg, scene)
    counts = re.search(r"(\d+) results, (\d+) published", run.stderr)
    late = re.search(r"(\d+) late results dropped", run.stderr)
    # Every result is published, the last one too, but for those overtaken by a newer one (two
    # requests are in flight, and their answers may come back out of order).
    assert counts and late and int(counts[1]) == int(counts[2]) + int(late[1]), run.stderr
    recorded = cv2.VideoCapture(str(tmp_path / "annotated.avi"))
    assert recorded.isOpened() and recorded.get(cv2.CAP_PROP_FRAME_COUNT) >= 40
    assert recorded.get(cv2.CAP_PROP_FPS) == pytest.approx(20.0)  # the source's rate, not a default
    ok, frame = recorded.read()
    assert ok and frame.shape == (540, 960, 3)


def test_a_file_ends_cleanly_even_during_a_long_retry_after(api_server, spawn, tmp_path):
    clip = write_clip(tmp_path / "short.avi", SyntheticScene(640, 360, 10.0), 12)
    api_server.set_fault(Fault(status=429, retry_after="3600", remaining=1))
    run = spawn(["run", "--source", str(clip), "--model", "synthetic/1", "--api-url", api_server.url, "--headless"])
    assert run.wait(15) == 0, run.stderr
    assert "asks to wait 3600 s" in run.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["run", "--source", "no-such-file.mp4", "--model", "a/1"], "no-such-file.mp4' not found"),
        (["run", "--source", "synthetic"], "api.model: not set"),
        (["run", "--source", "synthetic", "--model", "a/1", "--confidence", "40"], "for 40 % write 0.4"),
        (
            ["run", "--source", "synthetic", "--model", "a/1", "--zmq", "tcp://0.0.0.0:5555"],
            "output.zmq: tcp://0.0.0.0:5555 can be reached from other machines (from --zmq)",
        ),
        (["run", "-c", "missing.yaml"], "missing.yaml: config file not found"),
    ],
)
def test_usage_errors_exit_2_with_one_line(spawn, args, words):
    run = spawn(args)
    assert run.wait(20) == 2
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and words in lines[-1], run.stderr


@pytest.mark.parametrize("source", ["57", "/dev/video57"])
def test_a_missing_webcam_is_named_with_a_hint_once_and_retried(spawn, source):
    """Not an exit that a service manager restarts every 5 s: the camera may be plugged in later."""
    args = ["run", "--source", source, "--model", "a/1", "--api-url", "http://127.0.0.1:9", "--headless"]
    run = spawn([*args, "--duration", "3"])
    assert run.wait(20) == 0, run.stderr
    hint = (
        f"cannot open webcam {source}: no /dev/video57 here (is the camera plugged in? "
        "ls -l /dev/video* lists the cameras and who may open them: the user needs the video group) "
        "(retrying with backoff)"
    )
    assert run.stderr.count(hint) == 1, run.stderr
    reconnects = re.search(r"stopped: .* (\d+) source reconnects", run.stderr)
    assert reconnects and int(reconnects[1]) >= 2, run.stderr


def test_a_run_whose_results_go_nowhere_says_so(api_server, spawn):
    """Headless with no output at all: one warning naming the outputs; none once there is one."""
    base = ["run", "--source", "synthetic", "--model", "synthetic/1", "--api-url", api_server.url, "--headless"]
    nowhere = spawn([*base, "--duration", "1"])
    to_file = spawn([*base, "--duration", "1", "--jsonl", "out.jsonl"], name="with-jsonl")
    assert nowhere.wait(20) == 0 and to_file.wait(20) == 0, nowhere.stderr + to_file.stderr
    assert nowhere.stderr.count("results go nowhere") == 1 and "--http PORT" in nowhere.stderr
    assert "results go nowhere" not in to_file.stderr
