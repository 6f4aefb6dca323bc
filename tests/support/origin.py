"""Real HTTP servers on 127.0.0.1 that count connections, for the transport tests.

``Origin`` is a small HTTP/1.1 server (``http.server``) whose answer to each request a test
scripts by connection: answer, answer and hang up, read and hang up without answering, answer
before reading the body, read the body slowly, stall, cut a body short, or declare a body over
the client's cap.  It records every accepted TCP connection and each request read on it (path,
headers, how much of the body was read), so a test can tell a reused keep-alive connection from
a new one, and what the server really received.

``TcpRelay`` is a plain TCP forwarder in front of any server (e.g. streamer's ApiServer): it
counts the connections a client opens without touching the server behind it.

    with Origin(rule=lambda conn, nth: "drop" if nth else "ok") as origin:
        DetectionClient(origin.url, ...)
        origin.requests_per_connection()   # e.g. [2, 1]
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self

# A valid detection answer (what parse_response accepts): two boxes in a 640x360 upload.
ANSWER = json.dumps({
    "inference_id": "origin", "time": 0.001, "image": {"width": 640, "height": 360},
    "predictions": [
        {"x": 102.0, "y": 51.0, "width": 102.0, "height": 86.0, "confidence": 0.99, "class": "red-square",
         "class_id": 0},
        {"x": 357.0, "y": 186.0, "width": 94.0, "height": 94.0, "confidence": 0.9, "class": "green-circle",
         "class_id": 1},
    ],
}).encode()

OVER_CAP_BYTES = 33 * 1024 * 1024  # past the client's 32 MiB cap
WAIT_S = 5.0  # the longest any handler waits on the test (a stall, a client hang-up)
SLOW_S = 0.3  # how long "slow" waits before it answers
DRIP_STEP_S = 0.1  # "drip": one byte of whitespace this often ...
DRIP_S = 1.5  # ... for this long (or until released), then the answer
SLOW_READ_BYTES = 256 * 1024  # "slow-read": this much of the body ...
SLOW_READ_PAUSE_S = 0.02  # ... then a pause this long, until the body is read
STOP_READING_AFTER = 1024 * 1024  # "stop-reading": read this much of the body, then nothing

# What a rule can answer for one request:
#   "ok"          200 with ANSWER, the connection kept alive
#   "ok-close"    200 with ANSWER and "Connection: close", then hang up
#   "ok-drop"     200 with ANSWER as if kept alive (no Connection: close), then hang up at once
#   "drop"        read the request, then hang up without a byte of answer (a FIN)
#   "reset"       read the request, then reset the connection (an RST: SO_LINGER 0 and close)
#   "early-401"   read the headers only, answer 401 with a JSON message and Connection: close, hang up
#   "early-413"   the same with 413; the unread body makes the hang-up an RST
#   "early-reset" read the headers only, then reset the connection without answering
#   "slow"        read the request, wait SLOW_S, answer as "ok"
#   "drip"        read the request, send headers, then a space every DRIP_STEP_S for DRIP_S, then ANSWER
#   "slow-read"   read the body SLOW_READ_BYTES at a time with SLOW_READ_PAUSE_S between, then "ok"
#   "stop-reading" read STOP_READING_AFTER bytes of the body, then nothing until released
#   "stall"       read the request, answer nothing until released (or WAIT_S)
#   "stall-body"  send the headers and half the body, then nothing until released
#   "short"       declare Content-Length len(ANSWER), send half of it, hang up
#   "short-chunked" send the first of two chunks, hang up without the last chunk
#   "bad-length"  200 with the header "Content-Length: ²" (a digit, not an ASCII one), '{"', hang up
#   "long-length" the same with a Content-Length of 5000 nines (past int()'s 4300 digits)
#   "103"         a "103 Early Hints" answer, then the 200 as "ok"
#   "huge"        declare a Content-Length over the cap, send 1 KiB, wait for the client to hang up
#   "huge-chunked" stream a chunked body over the cap (no length declared)
ACTIONS = ("ok", "ok-close", "ok-drop", "drop", "reset", "early-401", "early-413", "early-reset", "slow", "drip",
           "slow-read", "stop-reading", "stall", "stall-body", "short", "short-chunked", "bad-length", "long-length",
           "103", "huge", "huge-chunked")
BODY_UNREAD = ("early-401", "early-413", "early-reset")  # these act on the headers alone


@dataclass
class Seen:
    """One request the server read the headers of."""

    conn: int  # which connection, in the order they were accepted
    nth: int  # which request on that connection
    path: str
    headers: dict[str, str]
    length: int  # the Content-Length it declared
    body_read: int = 0  # how much of the body the server read
    read_s: float = 0.0  # from the first to the last body byte read
    whole: bool = field(init=False)

    def __post_init__(self) -> None:
        self.whole = self.length == 0


class _Conn:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.requests = 0
        self.open = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients hanging up, failed TLS handshakes: expected in these tests


class Origin:
    """The scripted server; ``rule(connection_index, nth_request_on_it) -> action``.

    ``port`` 0 picks a free one; a fixed port (80, 443) raises OSError when it cannot be bound."""

    def __init__(self, rule: Callable[[int, int], str] | None = None, *, framing: str = "chunked",
                 tls: ssl.SSLContext | None = None, port: int = 0):
        if framing not in ("chunked", "content-length"):
            raise ValueError(framing)
        self.rule = rule or (lambda conn, nth: "ok")
        self.framing = framing
        self.tls = tls
        self.release = threading.Event()  # ends every "stall", "drip" and "stop-reading"
        self.paths: list[str] = []
        self.seen: list[Seen] = []
        self.max_open = 0  # the most connections open at once
        self.max_in_flight = 0  # the most requests being answered at once
        self._open = 0
        self._in_flight = 0
        self._conns: list[_Conn] = []
        self._lock = threading.Condition()  # notified when a request or a connection comes or goes
        self._httpd = _Server(("127.0.0.1", port), self._handler())
        self._thread: threading.Thread | None = None

    # --- what a test reads ---

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        default = {"http": 80, "https": 443}[scheme]
        return f"{scheme}://127.0.0.1" + ("" if self.port == default else f":{self.port}")

    def requests_per_connection(self) -> list[int]:
        """For each TCP connection accepted so far, in order: how many requests were read on it
        (a request counts once its headers are read, whether or not its body was)."""
        with self._lock:
            return [c.requests for c in self._conns]

    def wait_requests(self, count: int, timeout_s: float = WAIT_S) -> bool:
        """Wait until count requests have arrived in all; True if they did in time."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self.seen) >= count, timeout_s)

    def wait_closed(self, timeout_s: float = 2.0) -> bool:
        """Wait until every connection accepted so far has ended on the server's side (its FIN
        sent); True if they all did in time."""
        with self._lock:
            return self._lock.wait_for(lambda: not any(c.open for c in self._conns), timeout_s)

    def close_idle(self, timeout_s: float = 2.0) -> bool:
        """Hang up every open connection (as a server does to idle keep-alive ones) and wait
        until their handlers have ended; True if they all did in time."""
        self._hang_up_open()
        return self.wait_closed(timeout_s)

    def _hang_up_open(self) -> None:
        with self._lock:
            conns = [c for c in self._conns if c.open]
        for conn in conns:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- life cycle ---

    def start(self) -> Origin:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="test.origin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(WAIT_S)
            self._thread = None
        self._hang_up_open()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the handler ---

    def _handler(self):
        origin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # an idle keep-alive connection ends on its own, never holds the test

            def setup(self) -> None:
                with origin._lock:
                    self._conn = _Conn(self.request)
                    self._index = len(origin._conns)
                    origin._conns.append(self._conn)
                    origin._open += 1
                    origin.max_open = max(origin.max_open, origin._open)
                    origin._lock.notify_all()
                if origin.tls is not None:  # the handshake here, in this connection's thread
                    self.request.settimeout(WAIT_S)
                    try:
                        self.request = origin.tls.wrap_socket(self.request, server_side=True)
                    except OSError:
                        self._ended()
                        raise
                    self._conn.sock = self.request
                super().setup()

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    try:  # the FIN (no TLS close_notify) goes out before a test hears the connection ended
                        self.request.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    if origin.tls is not None:  # socketserver only closes the socket it accepted, now detached
                        self.request.close()
                    self._ended()

            def _ended(self) -> None:
                with origin._lock:
                    self._conn.open = False
                    origin._open -= 1
                    origin._lock.notify_all()

            def log_message(self, fmt: str, *args) -> None:
                pass

            def do_POST(self) -> None:
                declared = self.headers.get("Content-Length") or "0"
                length = int(declared) if declared.isascii() and declared.isdigit() else 0
                with origin._lock:
                    nth = self._conn.requests
                    self._conn.requests += 1
                    seen = Seen(self._index, nth, self.path, dict(self.headers.items()), length)
                    origin.seen.append(seen)
                    origin.paths.append(self.path)
                    origin._in_flight += 1
                    origin.max_in_flight = max(origin.max_in_flight, origin._in_flight)
                    origin._lock.notify_all()
                action = origin.rule(self._index, nth)
                try:
                    if action not in BODY_UNREAD:
                        self._read_body(seen, action)
                    self._act(action)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
                    self.close_connection = True
                finally:
                    with origin._lock:
                        origin._in_flight -= 1

            def _read_body(self, seen: Seen, action: str) -> None:
                step, pause = seen.length, 0.0
                if action == "slow-read":
                    step, pause = SLOW_READ_BYTES, SLOW_READ_PAUSE_S
                elif action == "stop-reading":
                    step = STOP_READING_AFTER
                started = time.monotonic()
                while seen.body_read < seen.length:
                    if seen.body_read and pause:
                        time.sleep(pause)
                    data = self.rfile.read(min(step, seen.length - seen.body_read))
                    if not data:
                        break
                    seen.body_read += len(data)
                    seen.read_s = time.monotonic() - started
                    if action == "stop-reading":
                        origin.release.wait(WAIT_S)
                        self.close_connection = True
                        return
                seen.whole = seen.body_read == seen.length

            def _act(self, action: str) -> None:
                if action == "ok":
                    return self._answer(ANSWER)
                if action == "ok-close":
                    self.close_connection = True
                    return self._answer(ANSWER, {"Connection": "close"})
                if action == "ok-drop":
                    self._answer(ANSWER)
                    self.close_connection = True  # no header says so: the client thinks it is kept alive
                    return
                if action in ("drop", "stop-reading"):
                    self.close_connection = True
                    return
                if action in ("reset", "early-reset"):
                    self.close_connection = True
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.wfile.close()
                    self.rfile.close()
                    self.connection.close()  # the last reference: the descriptor closes, with an RST
                    return
                if action in ("early-401", "early-413"):
                    status = int(action[-3:])
                    message = {401: "Invalid API key", 413: "Payload too large for this model"}[status]
                    self.close_connection = True
                    return self._answer(json.dumps({"message": message}).encode(), {"Connection": "close"},
                                        status=status, framing="content-length")
                if action == "slow":
                    time.sleep(SLOW_S)
                    return self._answer(ANSWER)
                if action == "drip":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    deadline = time.monotonic() + DRIP_S
                    while time.monotonic() < deadline and not origin.release.wait(DRIP_STEP_S):
                        self.wfile.write(b"1\r\n \r\n")  # JSON may start with whitespace
                        self.wfile.flush()
                    self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(ANSWER), ANSWER))
                    self.wfile.flush()
                    return
                if action == "slow-read":
                    return self._answer(ANSWER)
                if action == "stall":
                    origin.release.wait(WAIT_S)
                    self.close_connection = True
                    return
                if action == "stall-body":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(ANSWER)))
                    self.end_headers()
                    self.wfile.write(ANSWER[: len(ANSWER) // 2])
                    self.wfile.flush()
                    origin.release.wait(WAIT_S)
                    self.close_connection = True
                    return
                if action in ("short", "short-chunked"):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    half = len(ANSWER) // 2
                    if action == "short":
                        self.send_header("Content-Length", str(len(ANSWER)))
                        self.end_headers()
                        self.wfile.write(ANSWER[:half])
                    else:
                        self.send_header("Transfer-Encoding", "chunked")
                        self.end_headers()
                        self.wfile.write(b"%x\r\n%s\r\n" % (half, ANSWER[:half]))
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if action in ("bad-length", "long-length"):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    # "²": str.isdigit() says yes, int() says no; 5000 digits: int() refuses past 4300
                    self.send_header("Content-Length", "\u00b2" if action == "bad-length" else "9" * 5000)
                    self.end_headers()
                    self.wfile.write(b'{"')
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if action == "103":
                    self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </model.css>; rel=preload\r\n\r\n")
                    self.wfile.flush()
                    return self._answer(ANSWER)
                if action == "huge":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(OVER_CAP_BYTES))
                    self.end_headers()
                    self.wfile.write(b" " * 1024)
                    self.wfile.flush()
                    self.connection.settimeout(WAIT_S)
                    self.rfile.read(1)  # returns when the client hangs up (it sends nothing more)
                    self.close_connection = True
                    return
                if action == "huge-chunked":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    piece = b" " * (1024 * 1024)
                    for _ in range(OVER_CAP_BYTES // len(piece)):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                    self.close_connection = True
                    return
                raise ValueError(f"unknown action {action!r}")

            def _answer(self, body: bytes, extra: dict[str, str] | None = None, *, status: int = 200,
                        framing: str | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                if (framing or origin.framing) == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    half = len(body) // 2
                    for part in (body[:half], body[half:]):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                self.wfile.flush()

        return Handler


class TcpRelay:
    """Forwards every TCP connection to ``target`` (host, port), counting them."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.accepted = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._socks: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test.relay", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            try:
                upstream = socket.create_connection(self.target, timeout=WAIT_S)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True, name="test.relay.pipe").start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(None)
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)  # pass the hang-up on
        except OSError:
            pass

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(WAIT_S)
        self._listener.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class RawOrigin:
    """A TCP server on 127.0.0.1 that answers each request with bytes a test wrote by hand: for
    framings http.server never sends (LF-only lines, folded headers, a 100 Continue, chunk
    extensions and trailers, HTTP/1.0, bytes past the body, an endless head).

    ``answers`` lists, request by request across all connections, the bytes to write; after
    writing an answer the server hangs up if ``close`` is in that answer's entry.  It counts the
    requests read on each connection, as Origin does."""

    def __init__(self, answers: list[bytes | tuple[bytes, str]]):
        self._answers = list(answers)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.per_connection: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="test.raw-origin", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(WAIT_S)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set() and self._answers:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.per_connection.append(0)
            with conn:
                conn.settimeout(WAIT_S)
                while self._answers and self._read_request(conn):
                    self.per_connection[-1] += 1
                    answer = self._answers.pop(0)
                    data, close = (answer, "") if isinstance(answer, bytes) else answer
                    conn.sendall(data)
                    if close:
                        break

    @staticmethod
    def _read_request(conn: socket.socket) -> bool:
        """Read one request whole (head and Content-Length body); False if the client hung up."""
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                more = conn.recv(65536)
                if not more:
                    return False
                data += more
            head, body = data.split(b"\r\n\r\n", 1)
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            while len(body) < length:
                more = conn.recv(65536)
                if not more:
                    return False
                body += more
            return True
        except OSError:
            return False
