"""Where results go: the ZeroMQ PUB feed, a JSONL file and a recorded video.

A message is one result as JSON (see README, "Message format"); on ZeroMQ it is sent
as two frames, the topic then the UTF-8 JSON.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import IO, Any, Callable

import cv2
import numpy as np
import zmq
from zmq.auth.thread import ThreadAuthenticator

from streamer import curve
from streamer.config import zmq_endpoint_is_local
from streamer.errors import ConfigError, OutputError, UsageError
from streamer.frames import Result
from streamer.stats import Stats

log = logging.getLogger(__name__)

MESSAGE_TYPE = "detections"
STATUS_TYPE = "status"


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null, so every consumer can parse the line."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def result_message(result: Result, published_at: float | None = None) -> dict[str, Any]:
    """The message for one result; boxes are centre xywh in original-frame pixels.

    Other top-level fields the API sent (e.g. a classifier's ``top`` and ``confidence``)
    are passed on too, unless they would clash with one of ours."""
    message = {
        "type": MESSAGE_TYPE,
        "source": result.source,
        "frame_id": result.frame_id,
        "captured_at": round(result.captured_at, 6),
        "sent_at": round(result.sent_at, 6),
        "received_at": round(result.received_at, 6),
        "published_at": round(time.time() if published_at is None else published_at, 6),
        "image": {"width": result.width, "height": result.height},
        "model": result.model,
        "inference_id": result.inference_id,
        "server_time": result.server_time_s,
        "reused": result.reused,
        "predictions": result.predictions,
    }
    for key, value in result.extra.items():
        message.setdefault(key, value)
    return message


def encode_message(message: dict[str, Any]) -> bytes:
    """Compact JSON that every consumer can parse: a NaN or infinity becomes null.  Those are
    rare, so the copy that replaces them is made only when the plain encoding refuses one."""
    try:
        text = json.dumps(message, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(_clean(message), separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


def status_message(source: str, state: str, stats: Stats, dropped: int, now_mono: float,
                   last_result: Result | None, now_wall: float | None = None) -> dict[str, Any]:
    """A heartbeat: what streamer is doing, so that silence on the detections topic can be
    told apart from "nothing detected" (results keep coming, empty) and from "dead"
    (no heartbeat)."""

    def age_s(mono: float | None) -> float | None:
        return None if mono is None else round(now_mono - mono, 3)

    return {
        "type": STATUS_TYPE,
        "source": source,
        "time": round(time.time() if now_wall is None else now_wall, 6),
        "state": state,
        "uptime_s": round(now_mono - stats.started_mono, 3),
        "source_state": stats.source_state,
        "api_state": stats.api_state,
        "api_down_s": age_s(stats.api_down_since),
        "last_frame_age_s": age_s(stats.last_frame_mono),
        "last_result_age_s": age_s(last_result.captured_mono if last_result else None),
        "last_result_frame_id": last_result.frame_id if last_result else None,
        "capture_fps": round(stats.capture_rate.rate(now_mono), 2),
        "inference_fps": round(stats.inference_rate.rate(now_mono), 2),
        "counters": stats.snapshot(dropped),
    }


class ZmqPublisher:
    """A PUB socket that never blocks the pipeline: bounded queue, non-blocking send, linger 0.

    With ``curve_secret_key_file`` the feed is encrypted with CURVE; with ``curve_clients_dir``
    too, only the clients whose public certificates (*.key) are in that folder at start may
    connect.  ``send`` and ``close`` may be called from several threads."""

    def __init__(self, endpoint: str, topic: str = "detections", sndhwm: int = 100, *,
                 curve_secret_key_file: str | None = None, curve_clients_dir: str | None = None):
        self.endpoint = endpoint
        self.topic = _topic_bytes(topic)
        self.dropped = 0
        self._lock = threading.Lock()  # a ZeroMQ socket must not be used by two threads at once
        self._auth: ThreadAuthenticator | None = None
        keys = None
        if curve_secret_key_file:
            if not zmq.has("curve"):
                raise ConfigError("output.zmq_curve_secret_key_file: this libzmq was built without CURVE; "
                                  "install the pyzmq wheel (it bundles libzmq with CURVE) or set it to null")
            keys = curve.read_secret(curve_secret_key_file, "output.zmq_curve_secret_key_file", ConfigError)
        if curve_clients_dir:
            if keys is None:
                raise ConfigError("output.zmq_curve_clients_dir: needs output.zmq_curve_secret_key_file")
            clients = curve.check_clients(curve_clients_dir, "output.zmq_curve_clients_dir", ConfigError)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUB)
        try:
            self._sock.setsockopt(zmq.SNDHWM, sndhwm)
            self._sock.setsockopt(zmq.LINGER, 0)
            if keys:
                if curve_clients_dir:
                    self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger(__name__ + ".auth"))
                    self._auth.start()
                    self._auth.thread.name = "streamer.zmq-auth"
                    self._auth.configure_curve(domain="*", location=str(curve_clients_dir))
                self._sock.curve_publickey, self._sock.curve_secretkey = keys
                self._sock.curve_server = True
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise UsageError(f"output.zmq: cannot bind {endpoint}: {exc}; choose another port "
                             "or stop the program using it") from None
        except BaseException:
            self.close()
            raise
        if not keys:
            security = "not encrypted"
        elif curve_clients_dir:
            security = f"CURVE, only the {clients} client(s) in {curve_clients_dir}"
        else:
            security = "CURVE, any client with the public key"
        log.info("publishing detections on %s (topic %r, %s)", endpoint, topic, security)
        if keys:
            log.info("CURVE public key of this feed: %s", keys[0].decode("ascii"))
        if not zmq_endpoint_is_local(endpoint):
            if not keys:
                log.warning("the feed on %s is NOT encrypted: anyone on the network can read it; set "
                            "output.zmq_curve_secret_key_file to encrypt it with CURVE", endpoint)
            else:
                log.warning("the feed on %s is reachable from other machines, encrypted with CURVE; %s may read it",
                            endpoint, f"only the clients in {curve_clients_dir}" if curve_clients_dir
                            else "any client holding the server's public key")

    def send(self, payload: bytes, topic: bytes | str | None = None) -> bool:
        """Queue one message (topic, payload); False if it was dropped or the publisher is closed.

        ``topic`` defaults to the configured one; another one (e.g. for status messages) lets
        subscribers pick by prefix."""
        frame = self.topic if topic is None else _topic_bytes(topic)
        with self._lock:
            if self._sock is None:
                return False
            try:
                self._sock.send_multipart([frame, payload], flags=zmq.NOBLOCK)
                return True
            except zmq.Again:  # not expected: PUB itself drops silently for a subscriber at its HWM
                self.dropped += 1
                return False

    def close(self) -> None:
        """Close the socket, stop the authenticator and the context; safe to call again."""
        with self._lock:
            if self._sock is not None:
                self._sock.close(linger=0)
                self._sock = None
            if self._auth is not None:
                # stop() joins the ZAP thread without a timeout; it only answers quick
                # in-memory lookups and exits on the TERMINATE message stop() sends.
                self._auth.stop()
                self._auth = None
            if self._ctx is not None:
                self._ctx.term()
                self._ctx = None


def _topic_bytes(topic: bytes | str) -> bytes:
    if isinstance(topic, bytes):
        return topic
    if isinstance(topic, str):
        return topic.encode("utf-8")
    raise TypeError(f"topic: expected bytes or str, got {type(topic).__name__}")


class JsonlWriter:
    """Appends one message per line, flushed, so a reader (or a crash) never sees half a line.

    A write that fails (a full disk, a removed USB stick) raises OutputError once, naming
    the file; the writer then stays quiet, since the run is stopping because of it."""

    def __init__(self, path: str, append: bool = True, what: str = "output.jsonl"):
        self.path = path
        self._what = what
        self._failed = False
        try:
            self._file: IO[bytes] | None = open(path, "ab" if append else "wb")
        except OSError as exc:
            raise UsageError(f"{what}: cannot open {path}: {exc.strerror or exc}") from None

    def send(self, payload: bytes) -> bool:
        if self._failed or self._file is None:
            return False
        try:
            self._file.write(payload + b"\n")
            self._file.flush()
        except OSError as exc:
            self._failed = True
            raise OutputError(f"{self._what}: cannot write {self.path}: {exc.strerror or exc}; free some "
                              "space or choose another file") from None
        return True

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()  # closes the descriptor even when its last flush fails
            except OSError as exc:
                if not self._failed:
                    log.warning("%s: the last lines of %s may be lost: %s", self._what, self.path,
                                exc.strerror or exc)


FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}  # the wheels carry no H.264 encoder (field notes)


class Recorder:
    """Writes annotated frames to a video; opened on the first frame, at the source's rate.

    ``fps`` may be a callable: it is asked on the first frame, once the source is open and
    knows its own rate.  ``what`` names the option in error messages."""

    def __init__(self, path: str, fps: float | Callable[[], float | None], what: str = "output.record"):
        self.path = path
        self._fps = fps
        self.fps: float | None = None
        self._what = what
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._start: float | None = None
        self._written = 0
        suffix = Path(path).suffix.lower()
        if suffix not in FOURCC:
            raise UsageError(f"{what}: {path}: expected a file name ending in .mp4 or .avi")
        self._fourcc = cv2.VideoWriter_fourcc(*FOURCC[suffix])
        parent = Path(path).resolve().parent
        if not parent.is_dir():
            raise UsageError(f"{what}: folder {parent} does not exist")

    def write(self, image: np.ndarray, captured_mono: float | None = None) -> None:
        """Append a frame.  With its capture time, the frame is placed on the video's timeline:
        repeated to fill frames the preview never saw, skipped if it comes early, so that
        a live recording plays at real speed."""
        size = (image.shape[1], image.shape[0])
        if self._writer is None:
            fps = self._fps() if callable(self._fps) else self._fps
            self.fps = fps if fps and 0 < fps <= 240 else 30.0
            self._writer = cv2.VideoWriter(self.path, self._fourcc, self.fps, size)
            if not self._writer.isOpened():
                raise UsageError(f"{self._what}: cannot write video {self.path}")
            self._size = size
            self._start = captured_mono
            self._written = 0
        elif size != self._size:  # the source changed size (e.g. after a reconnect)
            image = cv2.resize(image, self._size)
        copies = 1
        if captured_mono is not None and self._start is not None:
            due = int((captured_mono - self._start) * self.fps) + 1  # frames the timeline holds by now
            copies = min(due - self._written, int(self.fps * 5))  # a long stall is not filled for ever
        for _ in range(max(0, copies)):
            self._writer.write(image)
            self._written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
