"""Why a network source did not open, found by asking the host (real local sockets and servers)."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import free_port

from streamer.sources.probe import why_not_open


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


def test_an_rtsp_server_that_accepts_is_not_blamed_on_the_network():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        why = why_not_open(f"rtsp://127.0.0.1:{port}/x")
    assert why.startswith(f"127.0.0.1:{port} accepts connections, so the path")


def test_a_url_without_a_host_is_not_probed():
    assert why_not_open("udp://@:1234") is None
