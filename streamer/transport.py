"""A pooled HTTP/1.1 client on the standard library's ``http.client``: the API's hot path.

httpx spends about 2 ms of CPU on each POST here (most of it in its pure-Python HTTP/1.1
state machine); ``http.client`` spends about 0.5 ms.  At many calls a second that is the
largest share of the client's own CPU, so direct connections use this pool.  httpx stays
for what this does not do: proxies from the environment and HTTP/2 (see client.py).

It keeps httpx's behaviour where a user would notice: separate connect and read timeouts,
keep-alive connections dropped after 5 idle seconds, a connection the server has closed
never reused, and TLS verified against certifi's roots unless SSL_CERT_FILE or
SSL_CERT_DIR names others.
"""

from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

KEEPALIVE_EXPIRY_S = 5.0  # what httpx uses: servers often close idle connections soon after
WRITE_STEP_BYTES = 64 * 1024  # the write timeout applies to each step of this size
# What a write to a connection the server has closed raises, plain or TLS.
WRITE_FAILED = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, ssl.SSLEOFError,
                ssl.SSLZeroReturnError)


class PhaseTimeout(TimeoutError):
    """A socket timeout, named by the phase it hit: connect, write or read."""

    def __init__(self, phase: str):
        super().__init__(f"{phase} timeout")
        self.phase = phase


def tls_context() -> ssl.SSLContext:
    """Verified TLS for HTTP/1.1, with the roots httpx would use: $SSL_CERT_FILE, $SSL_CERT_DIR,
    else certifi."""
    if os.environ.get("SSL_CERT_FILE"):
        context = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    elif os.environ.get("SSL_CERT_DIR"):
        context = ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    else:
        import certifi  # installed with httpx

        context = ssl.create_default_context(cafile=certifi.where())
    context.set_alpn_protocols(["http/1.1"])
    return context


def proxy_for(url: str) -> str | None:
    """The proxy the environment sets for url (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY), or None."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(parts.netloc, proxies):
        return None
    return proxy


class _Unsent(Exception):
    """The request could not be written, and no answer could be read: the server has not
    had it whole, so it is safe to send again."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error


class _Connection(http.client.HTTPConnection):
    """One keep-alive connection: a connect timeout apart from the read/write timeout."""

    def __init__(self, host: str, port: int | None, connect_timeout_s: float, timeout_s: float,
                 tls: ssl.SSLContext | None):
        # The scheme's port, so that the Host header leaves it out as httpx does.  The port is
        # always passed: without one, http.client would read "::1" as host ":" port 1.
        self.default_port = http.client.HTTPS_PORT if tls is not None else http.client.HTTP_PORT
        super().__init__(host, port or self.default_port, timeout=timeout_s)
        self.connect_timeout_s = connect_timeout_s
        self._tls = tls
        self.idle_since = 0.0

    def connect(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), self.connect_timeout_s)
        except TimeoutError:
            raise PhaseTimeout("connect") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one write never waits on an ACK
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException as exc:
            sock.close()  # a failed handshake must not leave the socket open
            if isinstance(exc, TimeoutError):
                raise PhaseTimeout("connect") from None
            raise
        sock.settimeout(self.timeout)
        self.sock = sock

    def send(self, data) -> None:
        """Write data with the timeout on each step of progress, as httpx does: sendall (and
        a TLS write of the whole body) would make it a limit on the whole upload, too short
        on a slow uplink."""
        if self.sock is None:
            self.connect()
        if not isinstance(data, (bytes, bytearray)):
            super().send(data)
            return
        view = memoryview(data)
        while view:
            view = view[self.sock.send(view[:WRITE_STEP_BYTES]):]

    def reusable(self, now: float) -> bool:
        """Still open, not idle too long, and nothing unasked-for waiting on it.  A socket
        that reads ready while idle is one the server closed (or sent junk on)."""
        if self.sock is None or now - self.idle_since > KEEPALIVE_EXPIRY_S:
            return False
        try:
            poller = select.poll()  # not select(): it fails on descriptors past 1023
            poller.register(self.sock, select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False


class Response:
    """Status, headers and the raw (still encoded) body of one answer."""

    def __init__(self, raw: http.client.HTTPResponse):
        self._raw = raw
        self.status_code = raw.status
        self.reason_phrase = raw.reason
        self.headers = raw.headers  # case-insensitive .get, like httpx's

    def iter_raw(self, chunk_bytes: int) -> Iterator[bytes]:
        # read(), not read1(): only read() marks the answer finished (isclosed) when the last
        # byte of a Content-Length body arrives, and only a finished answer frees the connection.
        while True:
            try:
                chunk = self._raw.read(chunk_bytes)
            except TimeoutError:
                raise PhaseTimeout("read") from None
            if not chunk:
                if self._raw.length:  # http.client takes a body cut short for a whole one
                    raise http.client.IncompleteRead(b"", self._raw.length)
                return
            yield chunk


class ConnectionPool:
    """Keep-alive connections to one origin, shared by threads: each request borrows one,
    and gives it back only when its answer was read to the end."""

    def __init__(self, base_url: str, *, connect_timeout_s: float, timeout_s: float, max_connections: int,
                 headers: dict[str, str]):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {parts.scheme!r}")
        self.host = parts.hostname or ""
        self.port = parts.port
        self._tls = tls_context() if parts.scheme == "https" else None
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        self._max_idle = max(1, max_connections)
        self._slots = threading.BoundedSemaphore(self._max_idle)  # connections in use at once
        self._headers = dict(headers)
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _new(self) -> _Connection:
        return _Connection(self.host, self.port, self._connect_timeout_s, self._timeout_s, self._tls)

    def _borrow(self) -> tuple[_Connection, bool]:
        """A pooled connection that still works (newest first), else a new one; and whether reused."""
        now = time.monotonic()
        with self._lock:
            if self._closed:
                raise ConnectionError("the connection pool is closed")
            while self._idle:
                conn = self._idle.pop()
                if conn.reusable(now):
                    return conn, True
                conn.close()
        return self._new(), False

    def _give_back(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def _send(self, conn: _Connection, path: str, body: bytes | None,
              headers: dict[str, str]) -> http.client.HTTPResponse:
        if conn.sock is None:
            conn.connect()  # its failures are not write failures: nothing was sent
        try:
            conn.request("POST", path, body=body, headers={**self._headers, **headers})
        except TimeoutError:
            raise PhaseTimeout("write") from None
        except WRITE_FAILED as exc:
            # A server may answer before it has read the whole body (a 401, a 413) and close:
            # that answer, if it can still be read, is the one to report.
            try:
                return self._response(conn)
            except (OSError, http.client.HTTPException):
                raise _Unsent(exc) from None
        return self._response(conn)

    @staticmethod
    def _response(conn: _Connection) -> http.client.HTTPResponse:
        try:
            raw = conn.getresponse()
        except TimeoutError:
            raise PhaseTimeout("read") from None
        if 100 <= raw.status < 200:  # http.client passes over 100 Continue only
            raise http.client.HTTPException(f"the server answered {raw.status} (informational) "
                                            "in place of an answer")
        return raw

    @contextmanager
    def post(self, path: str, body: bytes | None, headers: dict[str, str]) -> Iterator[Response]:
        """POST path (with its query) and yield the response, its body not yet read.

        A request that could not even be written on a reused connection (the server had
        dropped it while idle) goes once more on a new one.  Once it is written it is never
        sent again: the server may have acted on it, and each call may be billed."""
        if not self._slots.acquire(timeout=self._timeout_s):
            raise PhaseTimeout("pool")
        try:
            conn, reused = self._borrow()
            try:
                try:
                    raw = self._send(conn, path, body, headers)
                except _Unsent as unsent:
                    conn.close()
                    if not reused:
                        raise unsent.error from None
                    conn = self._new()
                    try:
                        raw = self._send(conn, path, body, headers)
                    except _Unsent as again:
                        raise again.error from None
                yield Response(raw)
            except BaseException:
                conn.close()  # an answer not read to the end leaves the connection unusable
                raise
            if raw.isclosed() and not raw.will_close:
                self._give_back(conn)
            else:
                conn.close()
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close the idle connections, and refuse new requests; a borrowed connection is
        closed when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


__all__ = ["ConnectionPool", "PhaseTimeout", "Response", "proxy_for", "tls_context"]
