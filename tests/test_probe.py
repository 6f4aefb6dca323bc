"""Why a network source did not open, found by asking the host (real local sockets and servers)."""

from __future__ import annotations

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import free_port, need

from streamer.sources.probe import authorization, why_not_open
from support.rtsp import RtspServer, rtsp_server_available


class _Status(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802  (the name http.server calls)
        status = int(self.path.strip("/"))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_status_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.parametrize(
    "status, expected",
    [
        (401, "HTTP 401 from 127.0.0.1:{port}: check the user and password in the URL"),
        (404, "HTTP 404 from 127.0.0.1:{port}: check the path in the URL"),
        (200, "127.0.0.1:{port} answers HTTP 200, but OpenCV cannot read the stream in it (check its format)"),
    ],
)
def test_an_http_source_is_asked_for_its_status(http_status_server, status, expected):
    port = http_status_server.rsplit(":", 1)[1]
    assert why_not_open(f"{http_status_server}/{status}") == expected.format(port=port)


def test_a_refused_connection_is_named():
    port = free_port()
    assert why_not_open(f"rtsp://user:pw@127.0.0.1:{port}/stream") == (
        f"connection refused by 127.0.0.1:{port}: nothing listens there (is the camera on, the port right?)"
    )


def test_a_name_that_does_not_resolve_is_a_dns_failure():
    assert why_not_open("rtsp://camera.invalid/stream").startswith("DNS: cannot resolve camera.invalid")


def test_a_host_that_never_answers_is_a_timeout(unanswered_port):
    assert why_not_open(f"rtsp://127.0.0.1:{unanswered_port}/x", timeout_s=0.5) == (
        f"timeout: 127.0.0.1:{unanswered_port} did not answer within 0.5 s (is the host up, or a firewall in the way?)"
    )


def test_an_rtsp_port_that_accepts_but_never_answers_is_said_so():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        why = why_not_open(f"rtsp://127.0.0.1:{port}/x", timeout_s=0.5)
    assert why == f"127.0.0.1:{port} accepts connections but does not answer RTSP within 0.5 s (is this its RTSP port?)"


def test_an_http_server_on_the_rtsp_port_is_not_taken_for_a_camera(http_status_server):
    where = http_status_server.split("//", 1)[1]
    why = why_not_open(f"rtsp://{where}/404", timeout_s=2)
    assert why.startswith(f"{where} accepts connections but does not answer RTSP (it answered '<"), why
    assert why.endswith("' and closed; is this its RTSP port?)"), why


def test_a_url_without_a_host_is_not_probed():
    assert why_not_open("udp://@:1234") is None


@pytest.fixture(scope="module")
def rtsp_camera():
    """The real RTSP server, asking for a user and password as IP cameras do (digest)."""
    ok, why = rtsp_server_available()
    need(ok, why)
    with RtspServer(live=True, login=("viewer", "pa:ss-canary-5")) as camera:
        yield camera


@pytest.mark.parametrize(
    "login, path, expected",
    [
        ("viewer:pa%3Ass-canary-5@", "/typo", "RTSP 404 from {where}: check the path in the URL"),
        ("", "/typo", "RTSP 404 from {where}: check the path in the URL"),
        ("viewer:wrong@", "/cam", "RTSP 401 from {where}: check the user and password in the URL"),
        (
            "",
            "/cam",
            "RTSP 401 from {where}: the camera wants a user and password; put them in the URL (rtsp://USER:PASSWORD@...)",
        ),
        (
            "viewer:pa%3Ass-canary-5@",
            "/cam",
            "{where} answers RTSP 200 for this stream, so OpenCV cannot read the stream itself "
            "(--log-level debug shows FFmpeg's own reason)",
        ),
    ],
)
def test_an_rtsp_server_is_asked_for_the_stream_with_the_url_login(rtsp_camera, login, path, expected):
    where = f"127.0.0.1:{rtsp_camera.port}"
    assert why_not_open(f"rtsp://{login}{where}{path}") == expected.format(where=where)


@pytest.mark.parametrize(
    "challenge, expected",
    [
        ('Basic realm="cam"', "Basic dXNlcjpwdw=="),
        # RFC 2617's qop-less form, as FFmpeg computes it: the uri is the whole request URL.
        (
            'Digest realm="GStreamer RTSP Server", nonce="84a2111bc452ab0f"',
            'Digest username="user", realm="GStreamer RTSP Server", nonce="84a2111bc452ab0f", '
            'uri="rtsp://cam/x", response="{response}"',
        ),
    ],
)
def test_the_authorization_answers_the_challenge(challenge, expected):
    ha1 = hashlib.md5(b"user:GStreamer RTSP Server:pw").hexdigest()
    ha2 = hashlib.md5(b"DESCRIBE:rtsp://cam/x").hexdigest()
    response = hashlib.md5(f"{ha1}:84a2111bc452ab0f:{ha2}".encode()).hexdigest()
    assert authorization(challenge, ("user", "pw"), "DESCRIBE", "rtsp://cam/x") == expected.format(response=response)
