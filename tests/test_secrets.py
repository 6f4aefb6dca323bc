"""The canary search: run streamer through its faults with a canary API key and camera
password, then search everything it wrote for them.

Everything means stderr and stdout (at debug level, so httpx's own request lines are
there too), every ZeroMQ message (detections and heartbeats), the JSONL file, the
recorded video and the names of every file it created.  The faults include a server that
echoes the key back in its error messages, as some proxies do.
"""

from __future__ import annotations

import time

import pytest
from conftest import clean_env, free_port, rtsp_clip

from streamer.sources.synthetic import SyntheticScene
from streamer.standin.server import ApiServer, Fault
from support.rtsp import RtspServer

KEY = "canaryKEY7f3a9c"
PASSWORD = "canaryPW5e1b"
SCENE = SyntheticScene(640, 360, 30.0, moving=False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return rtsp_clip(tmp_path_factory, SCENE, 60)


def test_no_secret_appears_in_anything_streamer_writes(clip, spawn, subscriber, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    detections = subscriber(endpoint, b"detections")
    status = subscriber(endpoint, b"status")
    received: list[bytes] = []
    echo = f"bad request to /synthetic/1?api_key={KEY} (user viewer:{PASSWORD})"
    with RtspServer(clip=clip) as camera, ApiServer("127.0.0.1", 0, api_key=KEY) as api:
        url = camera.url.replace("rtsp://", f"rtsp://viewer:{PASSWORD}@")
        config = tmp_path / "config.yaml"
        config.write_text(
            f"source:\n  uri: {url}\n  reconnect_max_s: 1.0\napi:\n  model: synthetic/1\n"
            f"  url: {api.url}\n  backoff_max_s: 1.0\noutput:\n  headless: true\n"
            f"  zmq: {endpoint}\n  jsonl: {out / 'detections.jsonl'}\n"
            f"  record: {out / 'preview.avi'}\n  heartbeat_s: 0.5\nlog_level: debug\n"
        )
        run = spawn(["run", "-c", str(config)], env=clean_env(ROBOFLOW_API_KEY=KEY))

        def pump(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                for sub in (detections, status):
                    msg = sub.recv(0.02)
                    if msg is not None:
                        received.append(b"".join(msg))

        pump(6)
        assert any(b'"frame_id"' in m for m in received), run.stderr[-2000:]
        for fault in (
            Fault(503, echo, retry_after="1"),
            Fault(500, echo),
            Fault(400, echo),
            Fault(200, raw_body=f"<html>{echo}</html>".encode()),
            Fault(200, raw_body=f'{{"predictions": "{echo}"}}'.encode()),
        ):
            api.set_fault(Fault(**{**fault.__dict__, "remaining": 3}))
            pump(2)
        camera.kill()
        pump(2)
        camera.start()
        pump(4)
        # Last, the key is refused and echoed back: a fatal 401, exit 2 with one line.
        api.set_fault(Fault(401, f"Unauthorized api_key {KEY}"))
        code = run.wait(15)
        pump(0.5)
    assert code == 2, run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1].startswith("error: the API key was refused")
    written = {"stderr": run.stderr, "stdout": run.stdout, "zmq": b"\n".join(received).decode("utf-8", "replace")}
    for path in out.rglob("*"):
        written[f"name {path.name}"] = path.name
        written[str(path)] = path.read_bytes().decode("latin-1")
    for path in tmp_path.rglob("*"):  # every file it may have created anywhere in its working folder
        written[f"name {path}"] = str(path.relative_to(tmp_path))
    # The run did go through its faults, and wrote what we are searching.
    assert "answered 503" in run.stderr and "malformed" in run.stderr and "reopening" in run.stderr
    assert "api_key=***" in run.stderr or "api_key=%2A%2A%2A" in run.stderr  # httpx's debug lines, masked
    assert any(b'"type":"status"' in m for m in received)
    assert (out / "detections.jsonl").stat().st_size > 0 and (out / "preview.avi").stat().st_size > 0
    assert ":***@" in run.stderr
    for where, text in written.items():
        for secret in (KEY, PASSWORD):
            assert secret not in text, f"{secret} found in {where}"
    assert sum(v.count("viewer") for v in written.values()) > 0  # the user name is not a secret
