"""``streamer serve``: a local stand-in for the detection API, for offline work and tests.

It speaks the route of docs/api.md strictly (Content-Type required, raw base64
body or ``image=`` URL, the percent rule for confidence and overlap, ``{"message"}``
errors), but its detector only finds the shapes of the ``synthetic`` scene: it is
not a general object detector.  Tests can make it misbehave with ``set_fault``.
"""

from __future__ import annotations

import base64
import email.parser
import json
import logging
import random
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import cv2
import httpx
import numpy as np

from streamer.api.responses import parse_response
from streamer.config import MODEL_ID
from streamer.imaging import encode_jpeg
from streamer.outputs.overlay import draw_detections
from streamer.standin.detector import detect

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 20 * 1024 * 1024  # serverless limit


class _HttpServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that hangs up (reset, broken pipe) is routine, not a traceback on stderr."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            log.debug("client %s hung up: %s", client_address[0], sys.exc_info()[1])
            return
        super().handle_error(request, client_address)


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Fault:
    """What the next ``remaining`` requests get instead of a normal answer (None: for ever)."""

    status: int = 503
    message: str = "Service unavailable"
    retry_after: str | None = None
    hang_s: float = 0.0
    raw_body: bytes | None = None  # sent as is, e.g. an HTML page
    remaining: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    label: str = "fault"  # what fault_counts counts it under


def threshold(params: dict[str, list[str]], name: str, default: float) -> float:
    """A confidence/overlap parameter under the API's rule: >= 1 means percent, floor 0.01."""
    raw = params.get(name, [None])[-1]
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise HttpError(400, f"{name} must be a number, got {raw!r}") from None
    if value != value or value < 0:
        raise HttpError(400, f"{name} must be a non-negative number, got {raw!r}")
    return max(0.01, value / 100 if value >= 1 else value)


class ApiServer:
    """A threaded HTTP server on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9001,
        *,
        latency_ms: float = 0.0,
        jitter: float = 0.0,
        api_key: str | None = None,
        models: set[str] | None = None,
        detector: bool = True,
        predictions: list[dict] | None = None,
        class_names: dict[str, str] | None = None,
    ):
        self.latency_ms = latency_ms
        # Answer with other class names (e.g. one holding markup), to test what shows them.
        self.class_names = dict(class_names or {})
        # False: skip decoding and detection (fixed boxes), for benchmarks; predictions, when
        # given, are answered instead of detecting (e.g. hostile class names for a test).
        self.detector = detector and predictions is None
        self.fixed_predictions = FIXED_PREDICTIONS if predictions is None else tuple(predictions)
        self.jitter = jitter
        self.api_key = api_key
        self.models = models
        self.counts: dict[int, int] = {}
        self.fault_counts: dict[str, int] = {}  # faults served, by label (a hang counts once answered)
        self.in_flight = self.max_in_flight_seen = 0  # POSTs being handled now, and the most at once so far
        self._connections: set = set()  # open client sockets, closed by stop() like a dying server
        self._fault: Fault | None = None
        self._lock = threading.Lock()
        # Its own handler class, whose ``api`` is this server.
        self._httpd = _HttpServer((host, port), type("Handler", (_Handler,), {"api": self}))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.url = "http://{}:{}".format(*self._httpd.server_address[:2])  # the port picked, if 0 was asked

    def set_fault(self, fault: Fault | None) -> None:
        with self._lock:
            self._fault = fault

    def _take_fault(self) -> Fault | None:
        with self._lock:
            fault = self._fault
            if fault is not None and fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._fault = None
            return fault

    def start(self) -> ApiServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; safe before start and when called twice."""
        if self._thread is not None:
            self._httpd.shutdown()  # waits for serve_forever, so only when it runs
            self._thread.join(2.0)
            self._thread = None
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:  # keep-alive connections would otherwise go on being served
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the route itself ---

    def answer(self, path: str, query: str, headers, body: bytes) -> tuple[int, str, bytes, dict]:
        params = parse_qs(query, keep_blank_values=True)
        model = path.strip("/")
        if not MODEL_ID.match(model):
            raise HttpError(404, f"Not Found: {path}")
        key = params.get("api_key", [None])[-1]
        auth = headers.get("Authorization", "")
        if not key and auth.startswith("Bearer "):
            key = auth[7:]
        if self.api_key is not None and not key:
            raise HttpError(400, "Missing api_key")
        if self.api_key is not None and key != self.api_key:
            raise HttpError(401, "Unauthorized api_key")
        if self.models is not None and model not in self.models:
            raise HttpError(404, f"Model {model} not found")
        confidence = threshold(params, "confidence", 0.4)
        threshold(params, "overlap", 0.3)  # validated; the shapes never overlap, so no NMS
        fmt = params.get("format", ["json"])[-1]
        if fmt not in ("json", "image", "image_and_json"):
            raise HttpError(400, f"format must be json, image or image_and_json, got {fmt!r}")
        started = time.perf_counter()
        image = self._image(params, headers, body)
        predictions = (
            [p for p in detect(image) if p["confidence"] >= confidence]
            if self.detector
            else [dict(p) for p in self.fixed_predictions]  # a benchmark's server: the same answer, no detection work
        )
        max_det = params.get("max_detections", ["300"])[-1]
        predictions = predictions[: int(max_det) if max_det.isdigit() else 300]
        for p in predictions:
            p["detection_id"] = str(uuid.uuid4())
            p["class"] = self.class_names.get(p["class"], p["class"])
        took_s = time.perf_counter() - started  # the model's time; the delay stands for the network
        if self.latency_ms > 0:
            time.sleep(self.latency_ms * (1 + random.uniform(-self.jitter, self.jitter)) / 1000)
        response = {
            "inference_id": str(uuid.uuid4()),
            "time": round(took_s, 6),
            "image": {"width": int(image.shape[1]), "height": int(image.shape[0])},
            "predictions": predictions,
        }
        if fmt != "json":  # the boxes drawn on the image: alone, or in the JSON
            drawn = draw_detections(image.copy(), parse_response({"predictions": predictions}).detections)
            jpeg = encode_jpeg(drawn, 95)
            if fmt == "image":
                return 200, "image/jpeg", jpeg, {}
            response["visualization"] = base64.b64encode(jpeg).decode()
        return 200, "application/json", json.dumps(response).encode(), {}

    def _image(self, params, headers, body: bytes) -> np.ndarray:
        url = params.get("image", [None])[-1]
        if url:
            try:
                return _decode(httpx.get(url, timeout=10.0, follow_redirects=True).raise_for_status().content)
            except httpx.HTTPError as exc:
                raise HttpError(400, f"Could not load image from URL: {exc.__class__.__name__}") from None
        content_type = headers.get("Content-Type")
        if not content_type:
            raise HttpError(400, "Missing Content-Type header")
        if content_type.startswith("multipart/form-data"):
            message = email.parser.BytesParser().parsebytes(
                b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
            )
            for part in message.get_payload() if message.is_multipart() else ():
                if part.get_param("name", header="content-disposition") == "file":
                    return _decode(part.get_payload(decode=True) or b"")
            raise HttpError(400, "multipart body has no 'file' part")
        if not body:
            raise HttpError(400, "Empty request body: send a base64-encoded image")
        try:
            data = base64.b64decode(b"".join(body.split()), validate=True)
        except ValueError:  # binascii.Error is one
            raise HttpError(400, "Request body is not valid base64") from None
        return _decode(data)


# What detector=False answers: three boxes in a 640x360 upload of the synthetic scene.
FIXED_PREDICTIONS = (
    {"x": 102.0, "y": 51.0, "width": 102.0, "height": 86.0, "confidence": 0.99, "class": "red-square", "class_id": 0},
    {"x": 357.0, "y": 186.0, "width": 94.0, "height": 94.0, "confidence": 0.9, "class": "green-circle", "class_id": 1},
    {"x": 486.0, "y": 310.5, "width": 128.0, "height": 71.0, "confidence": 0.99, "class": "blue-box", "class_id": 2},
)


def _decode(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise HttpError(400, "Could not decode the image")
    return image


class _Handler(BaseHTTPRequestHandler):
    """One connection to the stand-in; ``api`` is set on a subclass per ApiServer."""

    api: ApiServer

    protocol_version = "HTTP/1.1"  # keep-alive, as the hosted API does
    server_version = "streamer-serve"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without this, Nagle's algorithm holds the
        # body until the client's delayed ACK, adding about 40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.api._lock:
            self.api._connections.add(self.connection)

    def finish(self) -> None:
        with self.api._lock:
            self.api._connections.discard(self.connection)
        super().finish()

    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def do_GET(self) -> None:
        self._send(
            200,
            "application/json",
            json.dumps({"server": "streamer serve", "detector": "synthetic shapes only"}).encode(),
            {},
        )

    def do_POST(self) -> None:
        with self.api._lock:
            self.api.in_flight += 1
            self.api.max_in_flight_seen = max(self.api.max_in_flight_seen, self.api.in_flight)
        try:
            self._post()
        finally:
            with self.api._lock:
                self.api.in_flight -= 1

    def _post(self) -> None:
        declared = self.headers.get("Content-Length") or "0"
        if not (declared.isascii() and declared.isdigit()):  # "-5", "1e3", " 12", two headers joined
            self.close_connection = True
            return self._error(400, f"Content-Length must be a non-negative integer, got {declared[:40]!r}")
        length = int(declared) if len(declared) <= 12 else MAX_BODY_BYTES + 1
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return self._error(413, f"Request body over {MAX_BODY_BYTES // 2**20} MB")
        body = self.rfile.read(length) if length else b""
        if (fault := self.api._take_fault()) is not None:
            return self._fault(fault)
        parts = urlsplit(self.path)
        try:
            status, ctype, payload, extra = self.api.answer(parts.path, parts.query, self.headers, body)
        except HttpError as exc:
            return self._error(exc.status, str(exc))
        except Exception:  # answer like a real server would, and keep serving
            log.exception("stand-in server failed on a request")
            return self._error(500, "Internal error")
        self._send(status, ctype, payload, extra)

    def _fault(self, fault: Fault) -> None:
        time.sleep(fault.hang_s)
        with self.api._lock:
            self.api.fault_counts[fault.label] = self.api.fault_counts.get(fault.label, 0) + 1
        extra = dict(fault.headers)
        if fault.retry_after is not None:
            extra["Retry-After"] = fault.retry_after
        if fault.raw_body is not None:
            guessed = "text/html" if fault.raw_body.lstrip().startswith(b"<") else "application/json"
            # A test may send a wrong Content-Type on purpose.
            return self._send(fault.status, extra.pop("Content-Type", guessed), fault.raw_body, extra)
        self._error(fault.status, fault.message, extra)

    def _error(self, status: int, message: str, extra: dict | None = None) -> None:
        self._send(status, "application/json", json.dumps({"message": message}).encode(), extra or {})

    def _send(self, status: int, ctype: str, payload: bytes, extra: dict) -> None:
        with self.api._lock:
            self.api.counts[status] = self.api.counts.get(status, 0) + 1
        try:
            self.send_response(status)
            for name, value in (("Content-Type", ctype), ("Content-Length", str(len(payload))), *extra.items()):
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
