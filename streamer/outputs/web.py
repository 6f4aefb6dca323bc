"""The web server: a live page, snapshots, the status and detections as JSON and Server-Sent
Events, /healthz and /metrics, through aiohttp.

aiohttp runs its own asyncio loop in one thread (``http``).  The pipeline hands it messages
as a sink: ``send`` and ``send_status`` only store the bytes and schedule the rest on that
loop, so they never block.  Video is encoded by ``web_video.VideoFeed`` only while a viewer
watches; each viewer holds at most one frame, the newest.  docs/web.md says why aiohttp.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from streamer.config import Config, split_bind
from streamer.credentials import HTTP_TOKEN, resolve_secret
from streamer.errors import ConfigError
from streamer.message import encode_message
from streamer.outputs.metrics import CONTENT_TYPE, Metrics
from streamer.outputs.web_page import PAGE
from streamer.outputs.web_video import NewestSlot, VideoFeed
from streamer.redact import register_secret
from streamer.threads import join_all, named_thread, set_os_thread_name
from streamer.types import Delivery, LiveView

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 2.0
EVENTS_QUEUE = 32  # messages held for one slow event-stream client; older ones are dropped
KEEPALIVE_S = 15.0  # a comment on a quiet event stream, so proxies keep it open
BOUNDARY = "frame"


def _icon() -> bytes:
    """The page's icon, a detection box on a dark square, as PNG (browsers ask for /favicon.ico)."""
    import cv2
    import numpy as np

    image = np.full((32, 32, 3), 34, np.uint8)
    cv2.rectangle(image, (6, 8), (25, 25), (10, 249, 72), 3)
    return cv2.imencode(".png", image)[1].tobytes()


FAVICON_PNG = _icon()
FRAME_ANCESTORS = "frame-ancestors 'none'"
SECURITY_HEADERS = {  # on every answer that does not set its own
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": FRAME_ANCESTORS,
}


@dataclass(frozen=True)
class WebSettings:
    host: str
    port: int  # 0: any free port
    token: str | None = None
    fps: float = 10.0
    max_side_px: int = 960
    jpeg_quality: int = 80
    health_max_age_s: float = 30.0


def web_settings(config: Config) -> WebSettings:
    """The settings output.* asks for (load() has refused a remote bind without a token)."""
    out = config.output
    token = resolve_secret(config, HTTP_TOKEN)
    if out.http_auth == "none":
        token = None
        log.warning(
            "output.http_auth: none: anyone who can reach %s may watch the camera and read the status", out.http
        )
    return WebSettings(
        *split_bind(out.http), token, out.http_fps, out.http_max_side, out.http_jpeg_quality, out.http_health_max_age_s
    )


def page_csp(nonce: str) -> str:
    """The page's Content-Security-Policy: only its own inline script and style run."""
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self'; "
        f"connect-src 'self'; base-uri 'none'; form-action 'none'; {FRAME_ANCESTORS}"
    )


def sse_event(kind: str, payload: bytes) -> bytes:
    """One Server-Sent Event; the compact JSON holds no newline, so it is one data line."""
    return b"event: " + kind.encode("ascii") + b"\ndata: " + payload + b"\n\n"


class WebServer:
    """Serves a view of the live run on settings.host:port from the ``http`` thread; an output."""

    output_name = "web"
    dropped = 0  # every viewer keeps only the newest message: nothing is queued to drop

    def __init__(self, view: LiveView, settings: WebSettings):
        self.view = view
        self.settings = settings
        register_secret(settings.token)
        self.metrics = Metrics(view.snapshot)
        self._stop = threading.Event()
        self.feed = VideoFeed(
            view.annotated,
            lambda jpeg: self._call(self._deliver_frame, jpeg),
            self._stop,
            fps=settings.fps,
            max_side_px=settings.max_side_px,
            quality=settings.jpeg_quality,
        )
        self._snapshots = ThreadPoolExecutor(1, "web-snapshot", initializer=set_os_thread_name)
        self._thread = named_thread("http", self._serve)
        self._ready = threading.Event()
        self._error: OSError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._viewers: set[NewestSlot] = set()
        self._listeners: set[asyncio.Queue] = set()
        self.latest_detections: bytes | None = None
        self.latest_status: bytes | None = None
        self.address: tuple[str, int] | None = None

    # --- lifecycle ---

    def start(self) -> WebServer:
        """Bind and serve; a port in use or a bad address is a ConfigError (exit 2)."""
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise ConfigError(f"output.http: the web server did not start within {START_TIMEOUT_S:g} s")
        if self._error is not None:
            raise ConfigError(
                f"output.http: cannot listen on {self.settings.host}:{self.settings.port}: "
                f"{self._error.strerror or self._error}"
                "; pick another port (--http PORT) or stop what uses it"
            )
        self.feed.start()
        log.info("web page: %s (health %shealthz, metrics %smetrics)", self.url, self.url, self.url)
        return self

    @property
    def url(self) -> str:
        host, port = self.address or (self.settings.host, self.settings.port)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def close(self, timeout_s: float = 4.0) -> bool:
        """Stop serving and end every stream; safe to call twice and before start."""
        if self._stop.is_set():
            return True
        if self._closing is not None:  # served: end the streams on the loop (if it still runs)
            self._call(self._end_streams)
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        join_all([self._thread], min(deadline, time.monotonic() + STOP_TIMEOUT_S))  # none before start
        ended = self.feed.join(max(0.0, min(STOP_TIMEOUT_S, deadline - time.monotonic())))
        self._snapshots.shutdown(wait=False, cancel_futures=True)
        return ended and not self._thread.is_alive()

    def _serve(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open())
        except OSError as exc:
            self._error = exc
        finally:
            self._ready.set()
        try:
            if self._error is None:
                loop.run_until_complete(self._closing.wait())
        finally:
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
            loop.close()

    async def _open(self) -> None:
        self._closing = asyncio.Event()
        app = web.Application(middlewares=[self._guard])
        app.on_response_prepare.append(self._headers)
        app.router.add_routes(  # web.get answers HEAD too
            web.get(path, handler)
            for path, handler in (
                ("/", self._page),
                ("/stream.mjpg", self._stream),
                ("/snapshot.jpg", self._snapshot),
                ("/api/status", self._status),
                ("/api/detections", self._detections),
                ("/api/events", self._events),
                ("/healthz", self._healthz),
                ("/metrics", self._metrics),
                ("/favicon.ico", self._favicon),
            )
        )
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.settings.host, self.settings.port).start()
        self.address = tuple(self._runner.addresses[0][:2])

    def _end_streams(self) -> None:
        self._closing.set()
        for slot in self._viewers:
            slot.put(b"")
        for queue in self._listeners:
            _put_newest(queue, None)

    # --- the sink side: called from the pipeline's threads, never blocking ---

    def deliver(self, delivery: Delivery) -> None:
        if delivery.kind == "status":
            self.latest_status = delivery.payload
        else:
            self.latest_detections = delivery.payload
            self.metrics.observe(delivery)
        self._call(self._fan_out, delivery.kind, delivery.payload)

    def _call(self, fn, *args) -> None:
        loop = self._loop
        if loop is None or self._stop.is_set():
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def _fan_out(self, kind: str, payload: bytes) -> None:
        event = sse_event(kind, payload)
        for queue in self._listeners:
            _put_newest(queue, event)

    def _deliver_frame(self, jpeg: bytes) -> None:
        head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
        part = head.encode("ascii") + jpeg + b"\r\n"
        for slot in self._viewers:
            slot.put(part)

    # --- HTTP ---

    def _authorised(self, request: web.Request) -> bool:
        token = self.settings.token
        if token is None:
            return True
        given = request.query.get("token", "")
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        # /healthz answers a container's probe without the token (its status only, see _healthz),
        # and the icon is no secret; everything else needs the token when one is set.
        if request.path not in ("/healthz", "/favicon.ico") and not self._authorised(request):
            raise web.HTTPUnauthorized(
                text="401: a token is needed: send Authorization: Bearer TOKEN or ?token=TOKEN\n",
                headers={"WWW-Authenticate": 'Bearer realm="streamer"'},
            )
        return await handler(request)

    @staticmethod
    async def _headers(request: web.Request, response: web.StreamResponse) -> None:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)

    async def _page(self, request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        return web.Response(
            text=PAGE.replace("__NONCE__", nonce),
            content_type="text/html",
            headers={"Content-Security-Policy": page_csp(nonce)},
        )

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        content_type = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        if request.method == "HEAD":
            return web.Response(headers={"Content-Type": content_type})
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        slot = NewestSlot()
        self._viewers.add(slot)
        self.feed.watch()
        try:
            while not self._closing.is_set():
                part = await slot.get(1.0)
                if part:
                    await response.write(part)  # waits while the viewer's socket is full
        except ConnectionError:
            pass  # the viewer left
        finally:
            self._viewers.discard(slot)
            self.feed.unwatch()
        return response

    async def _snapshot(self, request: web.Request) -> web.Response:
        raw = request.query.get("raw", "") in ("1", "true", "yes")
        jpeg = await asyncio.get_running_loop().run_in_executor(self._snapshots, self.feed.snapshot, raw)
        if jpeg is None:
            return _json({"error": "no frame yet"}, 503)
        return web.Response(body=jpeg, content_type="image/jpeg")

    async def _status(self, request: web.Request) -> web.Response:
        return web.Response(body=encode_message(self.view.status_message()), content_type="application/json")

    async def _detections(self, request: web.Request) -> web.Response:
        payload = self.latest_detections
        if payload is None:
            return web.Response(status=204)
        return web.Response(body=payload, content_type="application/json")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        headers = {"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        if request.method == "HEAD":
            return web.Response(headers=headers)
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        queue: asyncio.Queue = asyncio.Queue(EVENTS_QUEUE)
        for kind, payload in (("status", self.latest_status), ("detections", self.latest_detections)):
            if payload is not None:  # the newest of each at once, so the page fills at once
                queue.put_nowait(sse_event(kind, payload))
        self._listeners.add(queue)
        try:
            await response.write(b"retry: 2000\n\n")
            while not self._closing.is_set():
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    event = b": keep-alive\n\n"
                if event is None:
                    break
                await response.write(event)
        except ConnectionError:
            pass  # the client left
        finally:
            self._listeners.discard(queue)
        return response

    async def _healthz(self, request: web.Request) -> web.Response:
        s = self.view.snapshot()
        reasons = s.problems(self.settings.health_max_age_s)
        body = {"ok": not reasons}
        if self._authorised(request):  # a probe without the token learns healthy or not, nothing more
            body.update(
                {
                    "reasons": reasons,
                    "source_state": s.source_state,
                    "api_state": s.api_state,
                    "last_frame_age_s": None if s.last_frame_age_s is None else round(s.last_frame_age_s, 3),
                    "last_result_age_s": None if s.last_result_age_s is None else round(s.last_result_age_s, 3),
                }
            )
        return _json(body, 503 if reasons else 200)

    async def _favicon(self, request: web.Request) -> web.Response:
        return web.Response(body=FAVICON_PNG, content_type="image/png", headers={"Cache-Control": "max-age=86400"})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.text(), headers={"Content-Type": CONTENT_TYPE})


def _json(body: dict, status: int = 200) -> web.Response:
    return web.Response(body=encode_message(body), status=status, content_type="application/json")


def _put_newest(queue: asyncio.Queue, item) -> None:
    """Put without waiting: a full queue loses its oldest item."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)
