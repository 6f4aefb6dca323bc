"""SIGTERM and SIGINT end ``streamer run`` cleanly within 3 s, whatever state it is in.

Each row puts a real subprocess into one state (camera stuck opening or reading, camera
gone, API refusing, API answering 503, a subscriber gone ...) and then signals it.
"""

from __future__ import annotations

import signal
import time

import pytest
from conftest import free_port, rtsp_clip

from streamer.sources.synthetic import SyntheticScene
from streamer.standin.server import ApiServer, Fault
from support.rtsp import RtspServer
from support.waiting import wait_until

SCENE = SyntheticScene(640, 360, 30.0, moving=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return rtsp_clip(tmp_path_factory, SCENE, 60)


def run_args(source: str, api_url: str, config, *extra: str) -> list[str]:
    return [
        "run",
        "-c",
        str(config),
        "--source",
        source,
        "--model",
        "synthetic/1",
        "--api-url",
        api_url,
        "--headless",
        *extra,
    ]


def camera_stuck_opening(ctx):
    ctx.camera.freeze()  # accepts the connection, never answers DESCRIBE
    ctx.start(ctx.camera.url)
    assert ctx.run.wait_for_log("->", 15)
    time.sleep(1.5)  # inside the 5 s open timeout


def camera_stuck_reading(ctx):
    ctx.start(ctx.camera.url)
    assert ctx.run.wait_for_log("open at", 20)
    time.sleep(1.0)
    ctx.camera.freeze()
    time.sleep(1.5)  # the read is blocked (read_timeout_s is 60 s here)


def camera_gone(ctx):
    ctx.start(ctx.camera.url)
    assert ctx.run.wait_for_log("open at", 20)
    ctx.camera.kill()
    assert ctx.run.wait_for_log("reopening", 15)


def api_refusing(ctx):
    ctx.start("synthetic", api_url=f"http://127.0.0.1:{free_port()}")
    assert ctx.run.wait_for_log("requests in a row failed", 15)


def api_down_503(ctx):
    ctx.api.set_fault(Fault(503, "down for maintenance"))
    ctx.start("synthetic")
    assert ctx.run.wait_for_log("requests in a row failed", 15)


def api_never_answers(ctx):
    ctx.api.set_fault(Fault(504, hang_s=60))
    ctx.start("synthetic")
    wait_until(lambda: ctx.api.in_flight >= 1, 15, "a request in flight (api.timeout_s is 30 s)")


def subscriber_gone(ctx):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx.start("synthetic", "--zmq", endpoint)
    listener = ctx.spawn(["listen", "--connect", endpoint, "--topic", "detections"], name="listen")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and '"frame_id"' not in listener.stdout:
        time.sleep(0.05)
    assert '"frame_id"' in listener.stdout
    listener.popen.kill()
    listener.wait(5)
    time.sleep(1.0)


STATES = [
    camera_stuck_opening,
    camera_stuck_reading,
    camera_gone,
    api_refusing,
    api_down_503,
    api_never_answers,
    subscriber_gone,
]
NEEDS_CAMERA = {camera_stuck_opening, camera_stuck_reading, camera_gone}


class Context:
    def __init__(self, spawn, api, camera, config):
        self.spawn, self.api, self.camera, self.config = spawn, api, camera, config
        self.run = None

    def start(self, source: str, *extra: str, api_url: str | None = None):
        self.run = self.spawn(run_args(source, api_url or self.api.url, self.config, *extra))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("state", STATES, ids=[s.__name__ for s in STATES])
def test_a_signal_ends_it_within_3_s_from_any_state(request, spawn, tmp_path, state, sig):
    config = tmp_path / "config.yaml"
    config.write_text("source:\n  read_timeout_s: 60\n  stall_timeout_s: 30\napi:\n  timeout_s: 30\n")
    camera = None
    if state in NEEDS_CAMERA:
        camera = RtspServer(clip=request.getfixturevalue("clip")).start()
    try:
        with ApiServer("127.0.0.1", 0) as api:
            ctx = Context(spawn, api, camera, config)
            state(ctx)
            assert ctx.run.popen.poll() is None, ctx.run.stderr
            code, seconds = ctx.run.terminate(sig)
    finally:
        if camera is not None:
            camera.stop(timeout=2.0)
    stderr = ctx.run.stderr
    assert code == 0, stderr[-2000:]
    assert seconds < 3, seconds
    assert "stopped:" in stderr and "Traceback" not in stderr


def test_a_second_ctrl_c_exits_at_once(clip, spawn, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("source:\n  read_timeout_s: 60\n  stall_timeout_s: 30\n")
    with RtspServer(clip=clip) as camera, ApiServer("127.0.0.1", 0) as api:
        run = spawn(run_args(camera.url, api.url, config))
        assert run.wait_for_log("open at", 20), run.stderr
        time.sleep(1.0)
        camera.freeze()  # the first Ctrl-C then waits for the blocked read (up to 1.5 s)
        time.sleep(1.0)
        started = time.monotonic()
        run.popen.send_signal(signal.SIGINT)
        time.sleep(0.2)
        run.popen.send_signal(signal.SIGINT)
        code = run.wait(5)
        seconds = time.monotonic() - started
    assert code == 130 and seconds < 1.0, (code, seconds)
