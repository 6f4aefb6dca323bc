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


def test_sigterm_with_everything_running_ends_within_3_s(spawn, tmp_path):
    """One deadline for the whole stop: an API that hangs, five viewers of the page (one that
    never reads), MQTT whose broker is gone, ZeroMQ with CURVE and an authenticator, JSONL on a
    FIFO nobody reads, and a recording.  SIGTERM ends it all in under 3 s, exit 0, and what could
    not finish is named in a warning."""
    import os
    import socket

    import httpx
    from conftest import clean_env, need, need_tool

    from streamer.outputs import curve
    from support.mosquitto import PASSWORD, Broker, tools_available
    from support.running import wait_until

    missing = tools_available()
    need(missing is None, f"{missing} not installed (see scripts/install-system-deps.sh)")
    need_tool("ffmpeg")
    _, secret = curve.create_pair(tmp_path / "keys", "server")
    clients = tmp_path / "clients"
    clients.mkdir()
    curve.create_pair(tmp_path / "client-keys", "alice")
    (clients / "alice.key").write_bytes((tmp_path / "client-keys" / "alice.key").read_bytes())
    config = tmp_path / "config.yaml"
    config.write_text(
        "inference:\n  max_fps: 30\n  max_in_flight: 4\n"
        f"api:\n  timeout_s: 30\noutput:\n  zmq_curve_secret_key_file: {secret}\n  zmq_curve_clients_dir: {clients}\n"
    )
    fifo = tmp_path / "out.jsonl"
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader that never reads
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker").start()
    http_port = free_port()
    viewers: list = []
    try:
        with ApiServer("127.0.0.1", 0) as api:
            extra = ["--zmq", f"tcp://127.0.0.1:{free_port()}", "--http", f"127.0.0.1:{http_port}"]
            extra += ["--mqtt", broker.url, "--jsonl", str(fifo), "--record", str(tmp_path / "rec.avi")]
            run = spawn(run_args("synthetic", api.url, config, *extra), env=clean_env(STREAMER_MQTT_PASSWORD=PASSWORD))
            assert run.wait_for_log("web page:", 20), run.stderr
            url = f"http://127.0.0.1:{http_port}/stream.mjpg"
            for _ in range(4):
                client = httpx.Client(timeout=10)
                stream = client.stream("GET", url)
                response = stream.__enter__()
                next(response.iter_bytes())  # watching: a first part came
                viewers.append((client, stream))
            stalled = socket.create_connection(("127.0.0.1", http_port))
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
            viewers.append((stalled, None))
            assert run.wait_for_log("MQTT: connected to", 20), run.stderr
            assert wait_until(lambda: "lines are dropped" in run.stderr, 60), run.stderr  # the FIFO is full
            broker.kill()  # then the broker goes
            api.set_fault(Fault(504, hang_s=60))  # and the API hangs
            assert wait_until(lambda: api.in_flight >= 1, 10)  # a request is held by the hanging API
            assert run.popen.poll() is None, run.stderr
            code, seconds = run.terminate(signal.SIGTERM)
    finally:
        for holder, stream in viewers:
            if stream is not None:
                stream.__exit__(None, None, None)
            holder.close()
        os.close(held)
        broker.stop()
    stderr = run.stderr
    print(f"SIGTERM with everything running: exit {code} in {seconds:.2f} s")
    assert code == 0, stderr[-3000:]
    print("\n".join(line for line in stderr.splitlines() if "received" in line or "WARNING" in line))
    assert seconds < 3, seconds
    assert "stopped:" in stderr and "Traceback" not in stderr
    unfinished = [line for line in stderr.splitlines() if "not finished at exit" in line]
    assert len(unfinished) == 1 and "WARNING" in unfinished[0] and "jsonl" in unfinished[0], stderr[-3000:]
