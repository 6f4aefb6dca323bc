"""A pooled keep-alive HTTP/1.1 client on plain sockets: the API's hot path.

Per POST of a frame, httpx spends about 1.2 to 1.7 ms of CPU here (most of it in its
pure-Python HTTP/1.1 state machine) and the standard library's ``http.client`` about 0.4
(a good part of it parsing headers with the email package).  This writes the request in
one piece and reads the answer with a few string operations: it only ever sends a POST
and reads its answer, so it needs little of HTTP.  httpx stays for what this does not do:
proxies from the environment and HTTP/2 (see client.py).

It keeps httpx's behaviour where a user would notice: separate connect and read timeouts,
keep-alive connections dropped after 5 idle seconds, a connection the server has closed
never reused, and TLS verified against certifi's roots unless SSL_CERT_FILE or
SSL_CERT_DIR names others.  Errors are http.client's exception classes, so callers
handle both the same way.
"""

from __future__ import annotations

import http.client
import os
import re
import select
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

HTTP_PORT, HTTPS_PORT = 80, 443
READ_BYTES = 64 * 1024
MAX_HEAD_BYTES = 64 * 1024  # an answer's status line and headers, its trailers, a line of chunked framing
MAX_INFORMATIONAL = 10  # 1xx answers passed over before the answer; more is an error
_EMPTY_LINE = re.compile(rb"\n\r?\n")
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


class _Connection:
    """One keep-alive HTTP/1.1 connection: a connect timeout apart from the read/write timeout."""

    def __init__(self, host: str, port: int | None, connect_timeout_s: float, timeout_s: float,
                 tls: ssl.SSLContext | None):
        default_port = HTTPS_PORT if tls is not None else HTTP_PORT
        self.host = host
        self.port = port or default_port  # always a number: "::1" alone is not host ":" port 1
        self.timeout = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._tls = tls
        self.sock: socket.socket | None = None
        self.idle_since = 0.0
        self.buffer = b""  # bytes read past the head of the answer being read
        try:
            name = host.encode("ascii")
        except UnicodeEncodeError:
            name = host.encode("idna")
        if b":" in name:
            name = b"[" + name + b"]"  # an IPv6 literal
        # The scheme's own port is left out of the Host header, as httpx does.
        self.host_header = name if self.port == default_port else name + b":%d" % self.port

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

    def close(self) -> None:
        sock, self.sock, self.buffer = self.sock, None, b""
        if sock is not None:
            sock.close()

    def head(self, method: str, target: str, headers: dict[str, str]) -> bytes:
        """The request line and headers, Host included; Content-Length and the empty line follow."""
        if any(c in target for c in "\r\n ") or "\x00" in target:
            raise ValueError("the request target holds a space or a control character")
        lines = [f"{method} {target} HTTP/1.1".encode("ascii"), b"Host: " + self.host_header]
        for name, value in headers.items():
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name} holds a line break")
            lines.append(f"{name}: {value}".encode("latin-1"))
        return b"\r\n".join(lines) + b"\r\n"

    def send(self, data: bytes) -> None:
        """Write data with the timeout on each step of progress, as httpx does: sendall (and
        a TLS write of the whole body) would make it a limit on the whole upload, too short
        on a slow uplink."""
        if self.sock is None:
            self.connect()
        view = memoryview(data)
        while view:
            view = view[self.sock.send(view[:WRITE_STEP_BYTES]):]

    def recv(self) -> bytes:
        """What has arrived (waiting for it up to the read timeout); b"" once the server has closed."""
        if self.buffer:
            data, self.buffer = self.buffer, b""
            return data
        try:
            return self.sock.recv(READ_BYTES)
        except TimeoutError:
            raise PhaseTimeout("read") from None

    def reusable(self, now: float) -> bool:
        """Still open, not idle too long, and nothing unasked-for waiting on it.  A socket
        that reads ready while idle is one the server closed (or sent junk on)."""
        if self.sock is None or self.buffer or now - self.idle_since > KEEPALIVE_EXPIRY_S:
            return False
        try:
            poller = select.poll()  # not select(): it fails on descriptors past 1023
            poller.register(self.sock, select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False


class Headers(dict):
    """An answer's headers, looked up by name in any case; a repeated one's values joined by ", "."""

    def get(self, name: str, default=None):
        return super().get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


class Response:
    """Status, headers and the raw (still encoded) body of one answer, read from the connection
    as asked for."""

    def __init__(self, conn: _Connection):
        self._conn = conn
        for _ in range(MAX_INFORMATIONAL):
            version, self.status_code, self.reason_phrase, self.headers = _read_head(conn)
            # Informational answers (100 Continue, 103 Early Hints) come before the answer and are
            # passed over, as httpx does; 101 would switch protocols, which we never ask for.
            if not 100 <= self.status_code < 200 or self.status_code == 101:
                break
        if 100 <= self.status_code < 200:
            raise http.client.HTTPException(f"the server answered {self.status_code} (informational) "
                                            "in place of an answer")
        connection = self.headers.get("Connection", "").lower()
        self.will_close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
        self.finished = False  # the body was read to its end
        self.chunked = "Transfer-Encoding" in self.headers
        self.length: int | None = None  # bytes of the body still to come, if known
        if self.status_code in (204, 304):  # never a body, whatever the headers say
            self.chunked, self.length = False, 0
        elif self.chunked:
            encoding = self.headers["Transfer-Encoding"]
            if [coding.strip() for coding in encoding.lower().split(",") if coding.strip()] != ["chunked"]:
                # gzip or another coding on top of chunked: an API never sends it, and its body
                # could not be read as JSON (h11, under httpx, refuses it too)
                raise http.client.HTTPException(f"the answer's Transfer-Encoding is not supported "
                                                f"({encoding[:40]!r}); only chunked is")
            if "Content-Length" in self.headers:
                # chunked wins, but both at once may be a smuggling attempt: read this answer,
                # then close (RFC 9112, 6.3)
                self.will_close = True
        else:
            declared = self.headers.get("Content-Length")
            if declared is None:  # the body ends when the server closes
                self.will_close = True
            else:
                values = {value.strip() for value in declared.split(",")}  # "2, 2" is one length
                value = values.pop()
                if values or not (value.isascii() and value.isdigit() and len(value) < 20):
                    raise http.client.HTTPException(f"the answer's Content-Length is not a length "
                                                    f"({declared[:40]!r})")
                self.length = int(value)

    def iter_raw(self, chunk_bytes: int) -> Iterator[bytes]:
        """The body as it arrives (at most about chunk_bytes a piece, chunked framing removed)."""
        conn = self._conn
        if self.chunked:
            yield from self._chunks(chunk_bytes)
        elif self.length is not None:
            while self.length:
                data = conn.recv()
                if not data:
                    raise http.client.IncompleteRead(b"", self.length)
                if len(data) > self.length:  # bytes past the body: nothing may follow unasked
                    data, conn.buffer = data[:self.length], data[self.length:]
                    self.will_close = True
                self.length -= len(data)
                yield data
        else:
            while data := conn.recv():
                yield data
        self.finished = True

    def _chunks(self, chunk_bytes: int) -> Iterator[bytes]:
        conn = self._conn
        while True:
            size_text = _read_line(conn).split(b";", 1)[0].strip()  # a chunk extension is ignored
            if not size_text or len(size_text) > 16 or size_text.strip(b"0123456789abcdefABCDEF"):
                raise http.client.IncompleteRead(b"")
            size = int(size_text, 16)
            if size == 0:
                trailers = 0
                while line := _read_line(conn):  # trailers, up to the empty line
                    trailers += len(line)
                    if trailers > MAX_HEAD_BYTES:
                        raise http.client.LineTooLong("trailers")
                return
            while size:
                data = conn.recv()
                if not data:
                    raise http.client.IncompleteRead(b"", size)
                if len(data) > size:
                    data, conn.buffer = data[:size], data[size:]
                size -= len(data)
                yield data
            if _read_line(conn):
                raise http.client.IncompleteRead(b"")  # a chunk is followed by CRLF


def _read_line(conn: _Connection) -> bytes:
    """One line (without its end) of chunked framing; IncompleteRead if the server hangs up."""
    data = b""
    while (end := data.find(b"\n")) < 0:
        if len(data) > MAX_HEAD_BYTES:
            raise http.client.LineTooLong("chunked framing")
        more = conn.recv()
        if not more:
            raise http.client.IncompleteRead(data)
        data += more
    conn.buffer = data[end + 1:] + conn.buffer
    return data[:end].rstrip(b"\r")


def _read_head(conn: _Connection) -> tuple[str, int, str, Headers]:
    """The status line and headers of the next answer on conn."""
    data = b""
    while True:
        # The head ends at the first empty line, whether lines end in CRLF or in LF alone.
        found = _EMPTY_LINE.search(data)
        if found and found.start() <= MAX_HEAD_BYTES:
            end, after = found.start(), found.end()
            break
        if len(data) > MAX_HEAD_BYTES:
            raise http.client.LineTooLong("answer head")
        more = conn.recv()
        if not more:
            if data:
                raise http.client.IncompleteRead(data)
            raise http.client.RemoteDisconnected("the server closed the connection without an answer")
        data += more
    conn.buffer = data[after:] + conn.buffer
    lines = data[:end].decode("latin-1").split("\n")
    parts = lines[0].rstrip("\r").split(None, 2)
    if (len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isascii() or not parts[1].isdigit()
            or len(parts[1]) != 3 or parts[1][0] == "0"):  # a status is 100 to 999, as http.client reads it
        raise http.client.BadStatusLine(lines[0][:80])
    headers = Headers()
    last = None
    for line in lines[1:]:
        line = line.rstrip("\r")
        if line[:1] in (" ", "\t"):  # a folded continuation of the last header (ignored if none)
            if last is not None:
                dict.__setitem__(headers, last, f"{dict.__getitem__(headers, last)} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if not colon:
            last = None
            continue
        last = name.strip().lower()
        if last in headers:  # a repeated header is one list, as RFC 9110 reads it ("keep-alive, close")
            value = f"{dict.__getitem__(headers, last)}, {value.strip()}"
        dict.__setitem__(headers, last, value.strip())
    return parts[0], int(parts[1]), parts[2].strip() if len(parts) > 2 else "", headers


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
        self._last_head: tuple = (None, b"")
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

    def _send(self, conn: _Connection, path: str, body: bytes | None, headers: dict[str, str]) -> Response:
        if conn.sock is None:
            conn.connect()  # its failures are not write failures: nothing was sent
        body = body or b""
        key = (path, tuple(headers.items()))
        cached_key, head = self._last_head  # one read: other threads may replace it
        if cached_key != key:  # mostly the same request line and headers as last time
            head = conn.head("POST", path, {**self._headers, **headers})
            self._last_head = (key, head)
        try:
            conn.send(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
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
    def _response(conn: _Connection) -> Response:
        try:
            return Response(conn)
        except TimeoutError:
            raise PhaseTimeout("read") from None

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
                    response = self._send(conn, path, body, headers)
                except _Unsent as unsent:
                    conn.close()
                    if not reused:
                        raise unsent.error from None
                    conn = self._new()
                    try:
                        response = self._send(conn, path, body, headers)
                    except _Unsent as again:
                        raise again.error from None
                yield response
            except BaseException:
                conn.close()  # an answer not read to the end leaves the connection unusable
                raise
            if response.finished and not response.will_close:
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
