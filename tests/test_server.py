"""The stand-in API speaks the contract in docs/api.md strictly (real HTTP on 127.0.0.1)."""

import base64
import logging

import cv2
import httpx
import pytest

from streamer.sources.synthetic import SyntheticScene
from streamer.standin.server import ApiServer

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def jpeg_b64(width=640, height=360, frame_id=0):
    ok, buf = cv2.imencode(".jpg", SyntheticScene(width, height).render(frame_id))
    return base64.b64encode(buf.tobytes())


def post(server, body, params=None, headers=FORM, model="synthetic/1"):
    return httpx.post(f"{server.url}/{model}", params=params or {}, content=body, headers=headers, timeout=10)


def test_detects_the_synthetic_shapes(api_server):
    r = post(api_server, jpeg_b64(), {"api_key": "x", "confidence": 0.4, "overlap": 0.3})
    assert r.status_code == 200
    data = r.json()
    assert data["image"] == {"width": 640, "height": 360}
    assert sorted(p["class"] for p in data["predictions"]) == ["blue-box", "green-circle", "red-square"]
    assert {"x", "y", "width", "height", "confidence", "class", "class_id", "detection_id"} <= set(
        data["predictions"][0]
    )
    assert isinstance(data["time"], float) and data["inference_id"]


def test_missing_content_type_is_400(api_server):
    r = post(api_server, jpeg_b64(), headers={"Content-Type": ""})
    assert r.status_code == 400 and "Content-Type" in r.json()["message"]


def test_body_that_is_not_base64_is_400(api_server):
    r = post(api_server, b"\xff\xd8 raw jpeg bytes are not base64 !!")
    assert r.status_code == 400 and "base64" in r.json()["message"]


def test_base64_that_is_not_an_image_is_400(api_server):
    r = post(api_server, base64.b64encode(b"hello"))
    assert r.status_code == 400 and set(r.json()) == {"message"}


@pytest.mark.parametrize(
    "confidence, kept",
    [
        (0.95, {"red-square", "blue-box"}),  # fraction: the circle (about 0.91) is below
        (95, {"red-square", "blue-box"}),  # >= 1 is read as percent: the same threshold
        (1, {"red-square", "blue-box", "green-circle"}),  # 1 means 1 %, not 100 %
        (0.5, {"red-square", "blue-box", "green-circle"}),
    ],
)
def test_percent_rule_for_confidence(api_server, confidence, kept):
    r = post(api_server, jpeg_b64(), {"confidence": confidence})
    assert {p["class"] for p in r.json()["predictions"]} == kept


def test_bad_confidence_is_400(api_server):
    assert post(api_server, jpeg_b64(), {"confidence": "lots"}).status_code == 400


def test_key_checks_when_the_server_has_one():
    with ApiServer("127.0.0.1", 0, api_key="right") as server:
        assert post(server, jpeg_b64(), {"api_key": "right"}).status_code == 200
        wrong = post(server, jpeg_b64(), {"api_key": "wrong"})
        assert wrong.status_code == 401 and "message" in wrong.json()
        assert post(server, jpeg_b64()).status_code == 400  # missing key
        bearer = post(server, jpeg_b64(), headers={**FORM, "Authorization": "Bearer right"})
        assert bearer.status_code == 200


def test_unknown_model_is_404():
    with ApiServer("127.0.0.1", 0, models={"synthetic/1"}) as server:
        r = post(server, jpeg_b64(), model="other/3")
        assert r.status_code == 404 and "other/3" in r.json()["message"]


def test_format_image_returns_a_drawn_jpeg(api_server):
    r = post(api_server, jpeg_b64(), {"format": "image"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert cv2.imdecode(__import__("numpy").frombuffer(r.content, "uint8"), 1).shape == (360, 640, 3)


def test_image_url_parameter_fetches_the_image(api_server, tmp_path):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    cv2.imwrite(str(tmp_path / "scene.jpg"), SyntheticScene(800, 600).render(3))
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    files = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{files.server_address[1]}/scene.jpg"
        r = httpx.post(f"{api_server.url}/synthetic/1", params={"image": url}, timeout=10)
        assert r.status_code == 200
        assert r.json()["image"] == {"width": 800, "height": 600}
        assert len(r.json()["predictions"]) == 3
    finally:
        files.shutdown()
        files.server_close()


def test_multipart_file_part(api_server):
    ok, buf = cv2.imencode(".jpg", SyntheticScene(640, 360).render(0))
    r = httpx.post(f"{api_server.url}/synthetic/1", files={"file": ("a.jpg", buf.tobytes(), "image/jpeg")}, timeout=10)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 3


def test_latency_is_added():
    import time

    with ApiServer("127.0.0.1", 0, latency_ms=300) as server:
        started = time.monotonic()
        assert post(server, jpeg_b64()).status_code == 200
        assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("length", ["-5", "1e3", "12abc", "+7"])
def test_a_bad_content_length_is_400(api_server, length, caplog):
    """Written by hand on a socket: httpx would never send such a header.  aiohttp's HTTP parser
    refuses it (its own 400, in HTTP/1.0 or 1.1 as it chooses), closes the connection, logs no
    traceback, and the server goes on serving."""
    import re
    import socket

    host, port = api_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            f"POST /synthetic/1 HTTP/1.1\r\nHost: x\r\nContent-Type: {FORM['Content-Type']}\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
        )
        chunks = []
        while chunk := sock.recv(4096):  # ends only if the server closes the connection (else a timeout)
            chunks.append(chunk)
        answer = b"".join(chunks).decode("latin-1")
    assert re.match(r"HTTP/1\.[01] 400 ", answer), answer
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert post(api_server, jpeg_b64()).status_code == 200


ABANDONED = """
import httpx, sys
from streamer.standin.server import ApiServer, Fault

with ApiServer("127.0.0.1", 0) as server:
    server.set_fault(Fault(status=200, hang_s=120, label="hang"))
    for _ in range(3):  # each client gives up on its request, as streamer does with a hung one
        try:
            httpx.post(server.url + "/synthetic/1", content=b"x", headers={"Content-Type": "x"}, timeout=0.3)
        except httpx.TimeoutException:
            pass
print("stopped")
"""


def test_stopping_with_requests_their_clients_gave_up_on_prints_nothing():
    """aiohttp keeps a handler running after its client hung up; stop() must end those too, or
    Python reports each one as "Task was destroyed but it is pending" when the process exits."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", ABANDONED], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "stopped", res.stderr
    assert "Task was destroyed" not in res.stderr and "Traceback" not in res.stderr, res.stderr
