"""An RTSP camera served by a real GStreamer RTSP server: detections arrive over ZeroMQ."""

import json
import signal
import time

import pytest

from conftest import need, need_tool, write_clip
from streamer.imaging import iou_xyxy, xywh_to_xyxy
from streamer.synthetic import SyntheticScene
from support.rtsp import RtspServer, encode_h264, rtsp_server_available

# A still scene, so that the truth is the same for every frame the camera sends.
SCENE = SyntheticScene(1280, 720, 30.0, moving=False)


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory):
    need_tool("ffmpeg")
    ok, why = rtsp_server_available()
    need(ok, why)
    folder = tmp_path_factory.mktemp("rtsp")
    raw = write_clip(folder / "raw.avi", SCENE, 90)
    return encode_h264(raw, folder / "camera.mp4", fps=30)


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
        run = spawn(["run", "-c", str(config), "--source", url, "--model", "synthetic/1",
                     "--api-url", api_server.url, "--headless", "--zmq", endpoint])
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
        run = spawn(["run", "--source", camera.url, "--model", "synthetic/1", "--api-url", api_server.url,
                     "--headless", "--zmq", endpoint])
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
