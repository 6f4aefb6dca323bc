"""A tiny real forward HTTP proxy on 127.0.0.1: absolute-form requests, forwarded with http.client.

    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        ...
        proxy.seen   # [(method, absolute target, headers), ...] in the order they came

It speaks plain HTTP only (no CONNECT): enough for an http:// API behind a proxy.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from typing_extensions import Self

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}
UPSTREAM_TIMEOUT_S = 10.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass


class ForwardProxy:
    def __init__(self):
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="test.proxy", daemon=True
        )

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._thread.join(5.0)
        self._httpd.server_close()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10

            def log_message(self, fmt: str, *args) -> None:
                pass

            def do_GET(self) -> None:
                self._forward()

            do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    proxy.seen.append((self.command, self.path, dict(self.headers.items())))
                target = urlsplit(self.path)
                if target.scheme != "http" or not target.hostname:  # origin-form: not a proxy request
                    return self._reply(400, b"absolute-form http:// request expected", [])
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                path = (target.path or "/") + (f"?{target.query}" if target.query else "")
                upstream = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=UPSTREAM_TIMEOUT_S)
                try:
                    upstream.request(self.command, path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    status, header_list = answer.status, answer.getheaders()
                except (OSError, http.client.HTTPException) as exc:
                    return self._reply(502, f"proxy: {exc.__class__.__name__}".encode(), [])
                finally:
                    upstream.close()
                kept = [
                    (k, v) for k, v in header_list if k.lower() not in HOP_BY_HOP | {"content-length", "date", "server"}
                ]
                self._reply(status, data, kept)

            def _reply(self, status: int, data: bytes, headers: list[tuple[str, str]]) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
