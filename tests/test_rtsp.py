"""An RTSP camera served by a real GStreamer RTSP server: detections arrive over ZeroMQ."""

import json
import re
import signal
import time

import pytest
from conftest import need, rtsp_clip

from streamer.sources.synthetic import SyntheticScene
from support.boxes import iou_xyxy, xywh_to_xyxy
from support.rtsp import RtspServer, rtsp_server_available

# A still scene, so that the truth is the same for every frame the camera sends.
SCENE = SyntheticScene(1280, 720, 30.0, moving=False)


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory):
    return rtsp_clip(tmp_path_factory, SCENE)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_camera_to_zmq_with_rescaled_boxes(camera_clip, api_server, spawn, subscriber, tmp_path, transport):
    from conftest import free_port

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = subscriber(endpoint)
    config = tmp_path / "rtsp.yaml"
    config.write_text(f"source:\n  rtsp_transport: {transport}\n")
    with RtspServer(clip=camera_clip) as camera:
        # A password in the URL: the server ignores it, streamer must never print it.
        url = camera.url.replace("rtsp://", "rtsp://viewer:canary-cam-pw-77@")
        run = spawn(
            [
                "run",
                "-c",
                str(config),
                "--source",
                url,
                "--model",
                "synthetic/1",
                "--api-url",
                api_server.url,
                "--headless",
                "--zmq",
                endpoint,
            ]
        )
        messages = sub.collect(10, timeout_s=30)
        assert len(messages) == 10, run.stderr + camera.log()
        code, seconds = run.terminate(signal.SIGTERM)
    assert code == 0 and seconds < 3
    for _, payload in messages:
        msg = json.loads(payload)
        assert msg["image"] == {"width": 1280, "height": 720}
        assert "canary-cam-pw-77" not in payload.decode()
        assert msg["source"].startswith("rtsp://viewer:***@127.0.0.1:")
        truth = dict(SCENE.boxes(0))
        assert sorted(p["class"] for p in msg["predictions"]) == sorted(truth)
        for pred in msg["predictions"]:
            assert iou_xyxy(xywh_to_xyxy(pred), truth[pred["class"]]) >= 0.9
    assert "canary-cam-pw-77" not in run.stderr + run.stdout


def test_camera_restart_is_survived(camera_clip, api_server, spawn, subscriber):
    from conftest import free_port

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = subscriber(endpoint)
    with RtspServer(clip=camera_clip) as camera:
        run = spawn(
            [
                "run",
                "--source",
                camera.url,
                "--model",
                "synthetic/1",
                "--api-url",
                api_server.url,
                "--headless",
                "--zmq",
                endpoint,
            ]
        )
        assert len(sub.collect(3, timeout_s=30)) == 3, run.stderr
        camera.kill()
        assert run.wait_for_log("reopening", 15), run.stderr
        camera.restart()
        back = time.monotonic()
        while sub.recv(0.05) is not None:  # drain what was published before the drop
            pass
        assert sub.recv(20) is not None, run.stderr
        recovery_s = time.monotonic() - back
        assert recovery_s < 15, recovery_s
        code, _ = run.terminate()
    assert code == 0


def first_message_after(sub, since: float, timeout_s: float):
    """The first detections message for a frame captured at or after ``since`` (wall clock)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.recv(max(0.01, deadline - time.monotonic()))
        if msg is not None:
            message = json.loads(msg[1])
            if message["captured_at"] >= since:
                return message
    return None


SMALL_SCENE = SyntheticScene(640, 360, 30.0, moving=False)


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory):
    return rtsp_clip(tmp_path_factory, SMALL_SCENE)


def test_camera_killed_and_restarted_five_times_frames_resume_within_3_s(
    camera_clip, small_clip, api_server, spawn, subscriber, tmp_path
):
    from conftest import free_port

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = subscriber(endpoint)
    recoveries = []
    with RtspServer(clip=camera_clip) as camera:
        # The default reconnect backoff (0.5 s doubling to 1 s); --max-fps 30 so that the first
        # frame back is sent at once rather than at the next of 2 call slots a second.
        run = spawn(
            [
                "run",
                "--source",
                camera.url,
                "--model",
                "synthetic/1",
                "--max-fps",
                "30",
                "--api-url",
                api_server.url,
                "--headless",
                "--zmq",
                endpoint,
            ]
        )
        assert first_message_after(sub, 0, 30) is not None, run.stderr
        for i in range(5):
            camera.kill()
            time.sleep(1.0)
            # The third return comes back at another size (a camera reconfigured while away).
            camera.clip = str(small_clip if i == 2 else camera_clip)
            camera.start()
            back = time.time()
            message = first_message_after(sub, back, 15)
            assert message is not None, f"restart {i + 1}: no frames\n{run.stderr[-3000:]}"
            recoveries.append(message["captured_at"] - back)
            scene = SMALL_SCENE if i == 2 else SCENE
            assert message["image"] == {"width": scene.width, "height": scene.height}
            truth = dict(scene.boxes(0))
            assert sorted(p["class"] for p in message["predictions"]) == sorted(truth)
            for pred in message["predictions"]:
                assert iou_xyxy(xywh_to_xyxy(pred), truth[pred["class"]]) >= 0.9
        code, seconds = run.terminate()
    assert code == 0 and seconds < 3
    assert max(recoveries) < 3.0, recoveries
    assert "Traceback" not in run.stderr


def test_a_frozen_camera_is_detected_within_the_stall_timeout_and_shutdown_still_works(
    camera_clip, api_server, spawn, subscriber
):
    from conftest import free_port

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = subscriber(endpoint)
    with RtspServer(clip=camera_clip) as camera:
        run = spawn(
            [
                "run",
                "--source",
                camera.url,
                "--model",
                "synthetic/1",
                "--api-url",
                api_server.url,
                "--headless",
                "--zmq",
                endpoint,
            ]
        )
        assert first_message_after(sub, 0, 30) is not None, run.stderr
        camera.freeze()
        frozen = time.monotonic()
        # Defaults: read timeout 2 s, stall timeout 10 s.
        assert run.wait_for_log("read failed", 20), run.stderr
        detected_s = time.monotonic() - frozen
        code, seconds = run.terminate()  # while the camera is still frozen
    assert detected_s <= 10, detected_s  # the stall timeout
    assert code == 0 and seconds < 3, (code, seconds)


def test_the_stall_watchdog_abandons_a_read_that_blocks_and_reopens(
    camera_clip, api_server, spawn, subscriber, tmp_path
):
    from conftest import free_port

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = subscriber(endpoint)
    config = tmp_path / "stall.yaml"
    # A read timeout far longer than the stall timeout: only the watchdog can notice.
    config.write_text("source:\n  read_timeout_s: 60\n  stall_timeout_s: 3\n  reconnect_max_s: 1\n")
    with RtspServer(clip=camera_clip) as camera:
        run = spawn(
            [
                "run",
                "-c",
                str(config),
                "--source",
                camera.url,
                "--model",
                "synthetic/1",
                "--api-url",
                api_server.url,
                "--headless",
                "--zmq",
                endpoint,
            ]
        )
        assert first_message_after(sub, 0, 30) is not None, run.stderr
        camera.freeze()
        frozen = time.monotonic()
        assert run.wait_for_log("is blocked", 10), run.stderr
        detected_s = time.monotonic() - frozen
        camera.thaw()
        back = time.time()
        message = first_message_after(sub, back, 20)
        assert message is not None, run.stderr
        code, seconds = run.terminate()
    assert 3 <= detected_s <= 5, detected_s
    assert code == 0 and seconds < 3
    assert "1 stalls" in run.stderr


@pytest.fixture(scope="module")
def camera_with_login():
    """The real RTSP server asking for a user and password (digest), as IP cameras do."""
    ok, why = rtsp_server_available()
    need(ok, why)
    with RtspServer(live=True, login=("viewer", "canary-login-pw-3")) as camera:
        yield camera


@pytest.mark.parametrize(
    "login, path, cause",
    [
        ("viewer:canary-login-pw-3@", "/typo", "RTSP 404 from {where}: check the path in the URL"),
        ("viewer:canary-wrong-pw-8@", "/cam", "RTSP 401 from {where}: check the user and password in the URL"),
    ],
)
def test_a_wrong_path_or_password_is_named_once_and_retried(
    camera_with_login, api_server, spawn, subscriber, login, path, cause
):
    from conftest import free_port

    where = f"127.0.0.1:{camera_with_login.port}"
    url = f"rtsp://{login}{where}{path}"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    args = ["run", "--source", url, "--model", "synthetic/1", "--api-url", api_server.url, "--headless"]
    run = spawn([*args, "--zmq", endpoint, "--duration", "4"])
    assert run.wait(30) == 0, run.stderr[-3000:]  # cameras boot late: retried until stopped
    shown = url.replace(login.split(":")[1].rstrip("@"), "***")
    line = f"cannot open stream {shown}: {cause.format(where=where)} (retrying with backoff)"
    assert run.stderr.count(line) == 1, run.stderr
    reconnects = re.search(r"stopped: .* (\d+) source reconnects", run.stderr)
    assert reconnects and int(reconnects[1]) >= 2, run.stderr
    assert "canary-login-pw-3" not in run.stderr + run.stdout and "canary-wrong-pw-8" not in run.stderr


def test_the_right_password_opens_the_camera_that_asks_for_one(camera_with_login, api_server, spawn, subscriber):
    """The server's login is real: FFmpeg gets in with the right one (so a 401 above is the password's)."""
    from conftest import free_port

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = subscriber(endpoint)
    url = camera_with_login.url.replace("rtsp://", "rtsp://viewer:canary-login-pw-3@")
    args = ["run", "--source", url, "--model", "synthetic/1", "--api-url", api_server.url, "--headless"]
    run = spawn([*args, "--zmq", endpoint])
    assert first_message_after(sub, 0, 30) is not None, run.stderr[-3000:]
    code, _ = run.terminate()
    assert code == 0
