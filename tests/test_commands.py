"""predict, video and listen, as a user runs them: subprocesses against real local servers."""

import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest
from conftest import free_port, write_clip

from streamer.sources.synthetic import SyntheticScene
from support.boxes import iou_xyxy, xywh_to_xyxy

SCENE = SyntheticScene(1600, 900, 30.0)


@pytest.fixture
def scene_jpg(tmp_path):
    path = tmp_path / "scene.jpg"
    cv2.imwrite(str(path), SCENE.render(42), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


def _api_args(server) -> list[str]:
    return ["--model", "synthetic/1", "--api-url", server.url]


def _check_boxes(data, frame_id=42):
    truth = dict(SCENE.boxes(frame_id))
    assert sorted(p["class"] for p in data["predictions"]) == sorted(truth)
    for pred in data["predictions"]:
        assert iou_xyxy(xywh_to_xyxy(pred), truth[pred["class"]]) >= 0.9


def test_predict_prints_only_json_in_original_pixels(api_server, spawn, scene_jpg, tmp_path):
    proc = spawn(
        ["predict", str(scene_jpg), "--model", "synthetic/1", "--api-url", api_server.url, "--save", "boxes.png"]
    )
    assert proc.wait(30) == 0, proc.stderr
    data = json.loads(proc.stdout)  # stdout holds the JSON and nothing else
    assert data["image"] == {"width": 1600, "height": 900}  # the original, though 640 wide was sent
    _check_boxes(data)
    assert {"inference_id", "time"} <= set(data)
    saved = cv2.imread(str(tmp_path / "boxes.png"))
    assert saved.shape == (900, 1600, 3)
    assert not np.array_equal(saved, cv2.imread(str(scene_jpg)))  # boxes were drawn


def test_predict_url_is_sent_as_image_parameter(api_server, spawn, scene_jpg):
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(scene_jpg.parent))
    files = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{files.server_address[1]}/{scene_jpg.name}"
        proc = spawn(["predict", url, "--model", "synthetic/1", "--api-url", api_server.url])
        assert proc.wait(30) == 0, proc.stderr
        only = spawn(
            ["predict", url, "--model", "synthetic/1", "--api-url", api_server.url, "--classes", "red-square"],
            name="only",
        )
        assert only.wait(30) == 0, only.stderr
    finally:
        files.shutdown()
        files.server_close()
    data = json.loads(proc.stdout)
    assert data["image"] == {"width": 1600, "height": 900}
    _check_boxes(data)
    assert [p["class"] for p in json.loads(only.stdout)["predictions"]] == ["red-square"]


def test_predict_format_image_saves_the_servers_drawing(api_server, spawn, scene_jpg, tmp_path):
    proc = spawn(
        [
            "predict",
            str(scene_jpg),
            "--model",
            "synthetic/1",
            "--api-url",
            api_server.url,
            "--format",
            "image",
            "--save",
            "server.jpg",
        ]
    )
    assert proc.wait(30) == 0, proc.stderr
    drawn = cv2.imread(str(tmp_path / "server.jpg"))
    assert drawn is not None and drawn.shape[1] == 640  # the server drew on what it was sent
    assert proc.stdout == ""


def test_predict_retries_a_passing_503(api_server, spawn, scene_jpg):
    from streamer.standin.server import Fault

    api_server.set_fault(Fault(status=503, retry_after="1", remaining=1))
    proc = spawn(["predict", str(scene_jpg), "--model", "synthetic/1", "--api-url", api_server.url])
    assert proc.wait(30) == 0, proc.stderr
    assert "trying again" in proc.stderr and len(json.loads(proc.stdout)["predictions"]) == 3


def test_predict_refuses_a_bad_save_path_before_asking_the_api(api_server, spawn, scene_jpg):
    proc = spawn(
        [
            "predict",
            str(scene_jpg),
            "--model",
            "synthetic/1",
            "--api-url",
            api_server.url,
            "--save",
            "/no/such/folder/x.png",
        ]
    )
    assert proc.wait(20) == 2 and proc.stdout == ""
    assert "--save: folder /no/such/folder does not exist" in proc.stderr
    assert api_server.counts == {}


@pytest.mark.parametrize("command", ["predict", "video"])
def test_ctrl_c_ends_a_one_shot_command_at_once(spawn, scene_jpg, tmp_path, command):
    import signal

    from streamer.standin.server import ApiServer
    from support.waiting import wait_until

    with ApiServer("127.0.0.1", 0, latency_ms=20000) as slow:
        if command == "predict":
            args = ["predict", str(scene_jpg)]
        else:
            src = write_clip(tmp_path / "in.avi", SyntheticScene(640, 360, 25.0), 10)
            args = ["video", str(src), "-o", "out.avi"]
        proc = spawn([*args, "--model", "synthetic/1", "--api-url", slow.url])
        wait_until(lambda: slow.in_flight >= 1, 15, lambda: f"a request in flight\n{proc.stderr}")
        code, seconds = proc.terminate(signal.SIGINT)
    assert code == 130 and seconds < 2, proc.stderr
    assert "error: interrupted" in proc.stderr


def test_video_survives_a_body_too_deep_to_parse_and_rewrites_its_jsonl(api_server, spawn, tmp_path):
    from streamer.standin.server import Fault

    src = write_clip(tmp_path / "in.avi", SyntheticScene(640, 360, 25.0), 6)
    api_server.set_fault(Fault(status=200, raw_body=b"[" * 200000, remaining=1))
    args = [
        "video",
        str(src),
        "-o",
        "out.avi",
        "--jsonl",
        "d.jsonl",
        "--model",
        "synthetic/1",
        "--api-url",
        api_server.url,
        "--workers",
        "1",
    ]
    first = spawn(args, name="first")
    assert first.wait(30) == 0, first.stderr
    assert "1 without detections" in first.stderr
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 5
    second = spawn(args, name="second")
    assert second.wait(30) == 0, second.stderr
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 6  # rewritten, not appended


def test_predict_reports_a_long_retry_after_instead_of_sleeping(api_server, spawn, scene_jpg):
    from streamer.standin.server import Fault

    api_server.set_fault(Fault(status=429, retry_after="3600"))
    proc = spawn(["predict", str(scene_jpg), "--model", "synthetic/1", "--api-url", api_server.url])
    assert proc.wait(20) == 1
    assert "asks to wait 3600 s" in proc.stderr


def test_video_stops_sending_after_a_fatal_answer(spawn, tmp_path):
    from streamer.standin.server import ApiServer

    src = write_clip(tmp_path / "in.avi", SyntheticScene(640, 360, 25.0), 30)
    with ApiServer("127.0.0.1", 0, api_key="other") as server:
        proc = spawn(
            [
                "video",
                str(src),
                "-o",
                "out.avi",
                "--model",
                "synthetic/1",
                "--api-url",
                server.url,
                "--api-key",
                "wrong-one",
            ]
        )
        assert proc.wait(20) == 2
        assert "API key was refused" in proc.stderr
        assert server.counts.get(401, 0) <= 8  # no more than the requests already in flight


def test_video_names_the_o_option_in_errors(spawn, tmp_path):
    src = write_clip(tmp_path / "in.avi", SyntheticScene(64, 64, 25.0), 1)
    proc = spawn(["video", str(src), "-o", "out.mkv", "--model", "a/1", "--api-url", "http://127.0.0.1:9"])
    assert proc.wait(20) == 2 and "error: -o: out.mkv: expected a file name ending in .mp4 or .avi" in proc.stderr


def test_predict_missing_file_exits_2(spawn):
    proc = spawn(["predict", "nope.jpg", "--model", "a/1", "--api-url", "http://127.0.0.1:9"])
    assert proc.wait(20) == 2 and "error: image file 'nope.jpg' not found" in proc.stderr


def test_video_infers_every_frame_in_order(api_server, spawn, tmp_path):
    scene = SyntheticScene(800, 450, 25.0)
    src = write_clip(tmp_path / "in.avi", scene, 40)
    proc = spawn(
        [
            "video",
            str(src),
            "-o",
            "out.mp4",
            "--jsonl",
            "det.jsonl",
            "--model",
            "synthetic/1",
            "--api-url",
            api_server.url,
        ]
    )
    assert proc.wait(60) == 0, proc.stderr
    lines = [json.loads(line) for line in (tmp_path / "det.jsonl").read_text().splitlines()]
    assert [m["frame_id"] for m in lines] == list(range(40))  # all of them, in order
    for msg in lines:
        assert msg["captured_at"] <= msg["sent_at"] < msg["received_at"] <= msg["published_at"]
        truth = dict(scene.boxes(msg["frame_id"]))
        for pred in msg["predictions"]:
            assert iou_xyxy(xywh_to_xyxy(pred), truth[pred["class"]]) >= 0.9
    out = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert out.get(cv2.CAP_PROP_FRAME_COUNT) == 40
    assert out.get(cv2.CAP_PROP_FRAME_WIDTH) == 800
    assert "40/40" in proc.stderr or "wrote 40 frames" in proc.stderr


def test_listen_refuses_a_bad_endpoint_with_exit_2(spawn):
    proc = spawn(["listen", "--connect", "tcp://nowhere"])
    assert proc.wait(20) == 2 and "error: --connect" in proc.stderr


def test_listen_as_a_probe_exits_1_when_nothing_arrives_in_time(spawn):
    """--timeout S with nothing publishing: one line, exit 1, in about S seconds; a bare port
    is tcp://127.0.0.1:PORT, as with --zmq."""
    port = free_port()
    proc = spawn(["listen", "--connect", str(port), "--timeout", "1.5"], name="listen")
    assert proc.wait(20) == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: --timeout: no message from tcp://127.0.0.1:{port} in 1.5 s; is streamer run publishing "
        "there (output.zmq), and is --topic right?"
    ]
    assert proc.stdout == ""


def test_listen_says_when_the_first_message_arrives_and_times_out_when_they_stop(spawn):
    """A real PUB socket sends while the listener has printed nothing (the slow joiner drops
    the first ones), then falls silent: one 'first message' line, then exit 1 after --timeout."""
    import time

    import zmq

    port = free_port()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"tcp://127.0.0.1:{port}")
    try:
        proc = spawn(["listen", "--connect", str(port), "--timeout", "2"], name="listen")
        deadline = time.monotonic() + 15
        n = 0
        while proc.stdout.count("\n") < 3 and time.monotonic() < deadline and proc.popen.poll() is None:
            pub.send_multipart([b"detections", json.dumps({"n": n}).encode()])
            n += 1
            time.sleep(0.05)
        assert proc.wait(20) == 1, proc.stderr  # silent for 2 s now
    finally:
        pub.close(0)
        ctx.term()
    lines = proc.stderr.strip().splitlines()
    assert [line for line in lines if "first message" in line] == [lines[0]], proc.stderr
    assert f"first message from tcp://127.0.0.1:{port} after" in lines[0]
    assert lines[1:] == [
        f"error: --timeout: no message from tcp://127.0.0.1:{port} in 2 s; is streamer run "
        "publishing there (output.zmq), and is --topic right?"
    ], proc.stderr
    printed = [json.loads(line)["n"] for line in proc.stdout.splitlines()]
    assert len(printed) >= 3 and printed == sorted(printed)


def test_listen_refuses_a_bad_timeout_or_port_with_exit_2(spawn):
    for args, words in [(["--timeout", "0"], "error: --timeout: expected"), (["--connect", "70000"], "--connect")]:
        proc = spawn(["listen", *args], name="listen")
        assert proc.wait(20) == 2 and words in proc.stderr, proc.stderr


def test_serve_on_a_busy_port_exits_2(api_server, spawn):
    port = api_server.url.rsplit(":", 1)[1]
    proc = spawn(["serve", "--port", port])
    assert proc.wait(20) == 2 and "pick another --port" in proc.stderr


def test_listen_prints_each_message_as_a_json_line(api_server, spawn):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    listener = spawn(["listen", "--connect", endpoint, "--count", "3", "--topic", "detections"], name="listen")
    run = spawn(
        [
            "run",
            "--source",
            "synthetic",
            "--model",
            "synthetic/1",
            "--api-url",
            api_server.url,
            "--headless",
            "--zmq",
            endpoint,
        ]
    )
    assert listener.wait(30) == 0, listener.stderr + run.stderr
    lines = listener.stdout.splitlines()
    assert len(lines) == 3
    for line in lines:
        msg = json.loads(line)
        assert msg["type"] == "detections" and len(msg["predictions"]) == 3
    code, _ = run.terminate()
    assert code == 0


def test_video_stops_with_one_line_naming_a_jsonl_file_that_cannot_be_written(api_server, spawn, tmp_path):
    """Offline, the file is the point: a full disk under --jsonl (/dev/full is one) is a
    one-line error naming the file, exit 1, no traceback, and no second error at close."""
    clip = write_clip(tmp_path / "in.avi", SyntheticScene(320, 240, 25.0), 10)
    proc = spawn(["video", str(clip), "-o", "out.avi", "--jsonl", "/dev/full"] + _api_args(api_server))
    assert proc.wait(20) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: --jsonl: cannot write /dev/full: No space left on device; free some space or choose another file"
        " (out.avi holds the first 1 of 10 frames)"
    ], proc.stderr


def test_run_goes_on_with_one_warning_when_the_jsonl_file_cannot_be_written(api_server, spawn):
    """Live, a full disk under output.jsonl pauses the file, not the detection (issue 15): one
    warning, the run goes on to its --duration and exits 0, the lost lines are counted."""
    args = ["run", "--source", "synthetic", "--headless", "--duration", "4", "--max-fps", "10"]
    proc = spawn([*args, "--jsonl", "/dev/full"] + _api_args(api_server))
    assert proc.wait(20) == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and "cannot write /dev/full: No space left on device" in warnings[0], proc.stderr
    assert api_server.counts.get(200, 0) >= 10  # detection went on
