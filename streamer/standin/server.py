"""``streamer serve``: a local stand-in for the detection API, for offline work and tests.

It speaks the route of docs/api.md strictly (Content-Type required, raw base64
body or ``image=`` URL, the percent rule for confidence and overlap, ``{"message"}``
errors), but its detector only finds the shapes of the ``synthetic`` scene: it is
not a general object detector.  Tests can make it misbehave with ``set_fault``.

It is served by aiohttp, as the web page is (outputs/web.py), on its own asyncio loop in the
``standin`` thread; detection, CPU work, runs in a thread pool so that the loop goes on answering.
"""

from __future__ import annotations

import asyncio
import base64
import email.parser
import json
import logging
import random
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import cv2
import httpx
import numpy as np
from aiohttp import web
from aiohttp.http import HttpProcessingError

from streamer.api.responses import parse_response
from streamer.config import MODEL_ID
from streamer.imaging import encode_jpeg
from streamer.outputs.overlay import draw_detections
from streamer.standin.detector import detect

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 20 * 1024 * 1024  # serverless limit


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
    """An HTTP server on ``host:port`` (port 0 picks a free one), bound at once, serving from start()."""

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
        # Changed on the loop only, read from anywhere:
        self.counts: dict[int, int] = {}
        self.fault_counts: dict[str, int] = {}  # faults served, by label (a hang counts once answered)
        self.in_flight = self.max_in_flight_seen = 0  # POSTs being handled now, and the most at once so far
        self._fault: Fault | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # cuts the latency short, so stop() need not wait for it
        self._sock = socket.create_server((host, port))
        # Detection is CPU work: a thread per request being answered (the latency waits there too).
        self._pool = ThreadPoolExecutor(32, "standin")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.url = "http://{}:{}".format(*self._sock.getsockname()[:2])  # the port picked, if 0 was asked

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
        logging.getLogger("aiohttp.server").addFilter(_quiet_refusal)  # once: addFilter skips a filter it has
        # aiohttp on a loop of its own, run by the ``standin`` thread, as outputs/web.py does.
        self._loop = asyncio.new_event_loop()
        runner = self._loop.run_until_complete(self._open())
        self._thread = threading.Thread(target=self._serve, args=(runner,), name="standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, ending every connection and any request held by a fault; safe before
        start and when called twice."""
        self._stopping.set()
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(2.0)
            self._thread = None
        self._pool.shutdown(cancel_futures=True)
        self._sock.close()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _open(self) -> web.ServerRunner:
        runner = web.ServerRunner(
            web.Server(self._handle, access_log=None, lingering_time=0),
            shutdown_timeout=0.1,  # what stop() grants a request being answered before it ends it
        )
        await runner.setup()
        await web.SockSite(runner, self._sock).start()
        return runner

    def _serve(self, runner: web.ServerRunner) -> None:
        asyncio.set_event_loop(self._loop)  # this thread's loop, as in outputs/web.py
        self._loop.run_forever()  # until stop()
        self._loop.run_until_complete(runner.cleanup())  # ends keep-alive connections and held requests
        # A request its client gave up on (a hang fault) is no longer on a connection, so the
        # cleanup does not end it: cancelled here, or it is reported pending at exit.
        for task in (left := asyncio.all_tasks(self._loop)):
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        self._loop.close()

    # --- HTTP: one handler for every request ---

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        if request.method == "GET":
            response = _response(
                200, "application/json", b'{"server": "streamer serve", "detector": "synthetic shapes only"}', {}
            )
        elif request.method == "POST":
            self.in_flight += 1
            self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)
            try:
                response = await self._post(request)
            finally:
                self.in_flight -= 1
        else:
            response = _error(501, f"Unsupported method ({request.method!r})")
        self.counts[response.status] = self.counts.get(response.status, 0) + 1
        log.debug('%s "%s %s" %d', request.remote, request.method, request.raw_path, response.status)
        return response

    async def _post(self, request: web.BaseRequest) -> web.Response:
        length = request.content_length or 0  # aiohttp has refused one that is not a number (a 400)
        if length > MAX_BODY_BYTES:
            response = _error(413, f"Request body over {MAX_BODY_BYTES // 2**20} MB")
            response.force_close()  # rather than read the rest (lingering_time=0)
            return response
        try:
            body = await request.content.readexactly(length) if length else b""
        except (ConnectionError, asyncio.IncompleteReadError) as exc:  # routine, not a traceback
            log.debug("client %s hung up: %r", request.remote, exc)
            return _error(400, "Request body cut short")  # for the counts; nobody reads it
        if (fault := self._take_fault()) is not None:
            return await self._answer_fault(fault)
        url = request.rel_url
        answered = self._loop.run_in_executor(
            self._pool, self.answer, url.raw_path, url.raw_query_string, request.headers, body
        )
        try:
            return _response(*await answered)
        except HttpError as exc:
            return _error(exc.status, str(exc))
        except Exception:  # answer like a real server would, and keep serving
            log.exception("stand-in server failed on a request")
            return _error(500, "Internal error")

    async def _answer_fault(self, fault: Fault) -> web.Response:
        await asyncio.sleep(fault.hang_s)  # holds this request only; stop() cancels it
        self.fault_counts[fault.label] = self.fault_counts.get(fault.label, 0) + 1
        extra = dict(fault.headers)
        if fault.retry_after is not None:
            extra["Retry-After"] = fault.retry_after
        if fault.raw_body is not None:
            guessed = "text/html" if fault.raw_body.lstrip().startswith(b"<") else "application/json"
            # A test may send a wrong Content-Type on purpose.
            return _response(fault.status, extra.pop("Content-Type", guessed), fault.raw_body, extra)
        return _error(fault.status, fault.message, extra)

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
            self._stopping.wait(self.latency_ms * (1 + random.uniform(-self.jitter, self.jitter)) / 1000)
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
        try:  # _decode raises HttpError, not a ValueError
            return _decode(base64.b64decode(b"".join(body.split()), validate=True))
        except ValueError:  # binascii.Error is one
            raise HttpError(400, "Request body is not valid base64") from None


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


def _response(status: int, ctype: str, payload: bytes, extra: dict) -> web.Response:
    return web.Response(
        status=status, body=payload, headers={"Content-Type": ctype, "Server": "streamer-serve", **extra}
    )


def _error(status: int, message: str, extra: dict | None = None) -> web.Response:
    return _response(status, "application/json", json.dumps({"message": message}).encode(), extra or {})


def _quiet_refusal(record: logging.LogRecord) -> bool:
    """A filter for aiohttp's documented ``aiohttp.server`` logger: a request its HTTP parser
    refused (a malformed Content-Length, a broken header or request line) is logged as one line
    at debug, as a client that hangs up is, instead of an error with a traceback.  aiohttp has
    already answered it with a 400 and closed the connection: it is the client's mistake, not
    the server's, and a test that sends one on purpose should not print a traceback.  It applies
    to every aiohttp server in the process (the web page's too), which is as wanted."""
    exc = record.exc_info[1] if record.exc_info else None
    if not isinstance(exc, HttpProcessingError):
        return True
    log.debug("%s: %s", record.getMessage(), " ".join(str(exc).split()))
    return False
