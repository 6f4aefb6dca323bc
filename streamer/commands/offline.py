"""``streamer predict`` (one image) and ``streamer video`` (a whole file, every frame, in order)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import cv2
import httpx
import numpy as np

from streamer import cvlog
from streamer.api.client import DetectionClient
from streamer.api.responses import Parsed
from streamer.commands.options import add_flags, command, config_from_args
from streamer.commands.run import make_client
from streamer.config import API, LOGGING, Config
from streamer.credentials import API_KEY, resolve_secret
from streamer.errors import (
    ApiBadRequest,
    ApiError,
    ApiMalformedResponse,
    ApiTransientError,
    Interrupted,
    OutputError,
    UsageError,
)
from streamer.imaging import Upload, limit_opencv_threads, prepare_upload
from streamer.message import encode_message, result_message
from streamer.outputs.jsonl import JsonlWriter
from streamer.outputs.overlay import draw_detections, draw_result
from streamer.outputs.recorder import Recorder
from streamer.retry import Backoff
from streamer.threads import join_all, named_thread
from streamer.types import Frame, api_predictions

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PREDICT_ATTEMPTS = 3


STOP_WORKERS_S = 0.5  # a stopped `streamer video` waits this long for requests in flight


def add_commands(sub) -> None:
    p = command(sub, "predict", "detect objects in one image file or URL and print the JSON", cmd_predict)
    p.add_argument("image", metavar="IMAGE_OR_URL")
    add_flags(p, API, LOGGING)
    p.add_argument(
        "--save",
        metavar="FILE",
        help="write the image with boxes drawn (locally, or the server's drawing with --format image)",
    )
    p.add_argument(
        "--format",
        choices=("json", "image"),
        default="json",
        help="json (default) or image: ask the server for its drawn image (needs --save)",
    )

    p = command(sub, "video", "annotate a whole video file offline: every frame, in order", cmd_video)
    p.add_argument("input", metavar="INPUT")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="annotated video (.mp4 or .avi)")
    p.add_argument(
        "--jsonl",
        metavar="FILE",
        help="write the detections, one message per frame the API "
        "answered (frames it refused are written to the video without boxes)",
    )
    p.add_argument("--workers", type=int, default=4, metavar="N", help="requests in flight (default 4)")
    add_flags(p, API, LOGGING)


def _client(config: Config, connections: int = 1) -> DetectionClient:
    return make_client(config, resolve_secret(config, API_KEY), max_connections=connections)


def _backoff(config: Config) -> Backoff:
    return Backoff(config.api.backoff_initial_s, config.api.backoff_max_s)


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _load_image(path_or_url: str, timeout_s: float) -> np.ndarray:
    if _is_url(path_or_url):
        try:
            data = httpx.get(path_or_url, timeout=timeout_s, follow_redirects=True).raise_for_status().content
        except httpx.HTTPError as exc:
            raise UsageError(f"cannot fetch {path_or_url}: {exc.__class__.__name__}") from None
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    else:
        if not Path(path_or_url).is_file():
            raise UsageError(f"image file {path_or_url!r} not found")
        image = cv2.imread(path_or_url, cv2.IMREAD_COLOR)
    if image is None:
        raise UsageError(f"{path_or_url}: not an image OpenCV can read (JPEG, PNG, BMP, WebP ...)")
    return image


def _check_save_path(path: str, suffixes: tuple[str, ...]) -> None:
    """Refuse a --save path before any request is made, so no answer is thrown away."""
    if not path.lower().endswith(suffixes):
        raise UsageError(f"--save: {path}: expected a file name ending in " + ", ".join(suffixes))
    if not Path(path).resolve().parent.is_dir():
        raise UsageError(f"--save: folder {Path(path).resolve().parent} does not exist")


def _interruptible(call: Callable[[], Any], stop: threading.Event) -> Any:
    """Run a blocking call in a helper thread so that Ctrl-C or SIGTERM ends the wait at once."""
    box: Future[Any] = Future()  # holds what the call returns or raises

    def target() -> None:
        try:
            box.set_result(call())
        except BaseException as exc:  # handed to the waiting thread
            box.set_exception(exc)

    thread = named_thread("request", target)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
        if stop.is_set():
            raise Interrupted("interrupted before the API answered")
    return box.result()


def _with_retries(call: Callable[[], Any], stop: threading.Event, backoff: Backoff, attempts: int) -> Any:
    """A few tries for a one-shot request: transient failures wait for the backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return _interruptible(call, stop)
        except ApiTransientError as exc:
            if attempt == attempts:
                raise
            if exc.retry_after_s is not None and exc.retry_after_s > backoff.max_s:
                raise ApiTransientError(
                    f"{exc}; the API asks to wait {exc.retry_after_s:.0f} s (Retry-After): try again later", exc.status
                ) from None
            delay = backoff.next_delay(exc.retry_after_s)
            log.warning("%s; trying again in %.1f s (%d of %d)", exc, delay, attempt + 1, attempts)
            if stop.wait(delay):
                raise Interrupted("interrupted while waiting to try again") from None


def cmd_predict(args: argparse.Namespace, stop: threading.Event) -> int:
    config = config_from_args(args)
    if args.format == "image" and not args.save:
        raise UsageError("--format image needs --save FILE to write the server's drawing to")
    if args.save:
        _check_save_path(args.save, (".jpg", ".jpeg") if args.format == "image" else IMAGE_SUFFIXES)
    with _client(config) as client:

        def send(fn: Callable[..., Any], **kwargs: Any) -> Any:
            return _with_retries(lambda: fn(**kwargs), stop, _backoff(config), PREDICT_ATTEMPTS)

        if args.format == "image":  # the server fetches a URL itself; a file is sent
            url = args.image if _is_url(args.image) else None
            body = None if url else _upload(_load_image(args.image, config.api.timeout_s), config).body
            Path(args.save).write_bytes(send(client.request, body=body, image_url=url, fmt="image"))
            log.info("wrote the server's drawing to %s", args.save)
            return 0
        # answer: the wanted classes, in the pixels of the image the response describes
        if _is_url(args.image):  # the server fetches it: boxes are already in its own pixels
            parsed: Parsed = send(client.infer_url, image_url=args.image).filtered(config.inference.classes)
            image = _load_image(args.image, config.api.timeout_s) if args.save else None
            answer, width, height = parsed, parsed.image_width, parsed.image_height
        else:
            image = _load_image(args.image, config.api.timeout_s)
            upload = _upload(image, config)
            sent_at = time.time()
            parsed = send(client.infer, body=upload.body)
            answer = parsed.filtered(config.inference.classes).result_for(
                Frame(args.image, 0, sent_at, time.monotonic(), image),
                (upload.sent_width, upload.sent_height),
                client.model,
                sent_at,
                time.time(),
            )
            width, height = answer.width, answer.height
    response = {
        "inference_id": parsed.inference_id,
        "time": parsed.time_s,
        "image": {"width": width, "height": height},
        "predictions": api_predictions(answer.detections, answer.labels, answer.multi_label),
        **parsed.extra,
    }
    print(json.dumps({k: v for k, v in response.items() if v is not None}, indent=2))
    if args.save and image is not None:
        if not cv2.imwrite(args.save, draw_detections(image.copy(), answer.detections, answer.labels)):
            raise UsageError(f"--save: cannot write {args.save}")
        log.info("wrote %s", args.save)
    return 0


def _upload(image: np.ndarray, config: Config) -> Upload:
    return prepare_upload(image, config.inference.max_side, config.inference.jpeg_quality)


class Progress:
    """A one-line progress bar on a terminal; a log line every 10 % elsewhere."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream, self.done = max(total, 0), stream, 0
        self.started = time.monotonic()
        self._tty = stream.isatty()
        self._last_decile = -1

    def update(self, n: int = 1) -> None:
        self.done += n
        rate = self.done / max(1e-6, time.monotonic() - self.started)
        if self._tty:
            bar = "#" * int(self.done / self.total * 30) if self.total else ""
            self.stream.write(f"\r[{bar:<30}] {self.done}/{self.total or '?'} frames, {rate:.1f} fps")
            self.stream.flush()
        elif self.total and self.done * 10 // self.total != self._last_decile:
            self._last_decile = self.done * 10 // self.total
            log.info("%d/%d frames (%.1f fps)", self.done, self.total, rate)

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")


@dataclass
class Job:
    """One frame of the video on its way through the API."""

    frame_id: int
    read_at: float
    image: np.ndarray
    upload: Upload
    done: threading.Event = field(default_factory=threading.Event)
    parsed: Parsed | None = None
    sent_at: float = 0.0
    received_at: float = 0.0


class OrderedInference:
    """Daemon worker threads that infer the frames put in ``jobs``; the caller collects them in
    order, and after the stop joins ``threads``.

    Offline every frame counts: a transient failure is retried with backoff until it works;
    a refused frame (400, malformed) is finished without detections; a fatal error is kept
    in ``error`` and stops all workers.  Daemon threads: an interrupted run does not wait
    for requests in flight."""

    def __init__(self, client: DetectionClient, workers: int, stop: threading.Event, backoff: Callable[[], Backoff]):
        self.client, self.stop, self._backoff = client, stop, backoff
        self.error: BaseException | None = None
        self.skipped = 0
        self.jobs: Queue[Job] = Queue()
        self.threads = [named_thread(f"request-{i + 1}", self._work) for i in range(workers)]
        for thread in self.threads:
            thread.start()

    def _work(self) -> None:
        while not self.stop.is_set():
            try:
                job = self.jobs.get(timeout=0.2)
            except Empty:
                continue
            try:
                self._infer(job, self._backoff())
            except BaseException as exc:  # fatal (401/402/403/404/423) or unexpected: stop all
                if not isinstance(exc, ApiError):
                    log.exception("video worker stopped by an unexpected error")
                self.error = exc
                self.stop.set()
            finally:
                job.done.set()

    def _infer(self, job: Job, backoff: Backoff) -> None:
        while not self.stop.is_set():
            job.sent_at = time.time()
            try:
                job.parsed = self.client.infer(job.upload.body)
                job.received_at = time.time()
                return
            except ApiTransientError as exc:
                delay = backoff.next_delay(exc.retry_after_s)
                log.warning("frame %d: %s; retrying in %.1f s", job.frame_id, exc, delay)
                self.stop.wait(delay)
            except (ApiBadRequest, ApiMalformedResponse) as exc:
                log.warning("frame %d written without detections: %s", job.frame_id, exc)
                self.skipped += 1
                return


def cmd_video(args: argparse.Namespace, stop: threading.Event) -> int:
    limit_opencv_threads()
    config = config_from_args(args)
    if not Path(args.input).is_file():
        raise UsageError(f"input video {args.input!r} not found")
    if not 1 <= args.workers <= 32:
        raise UsageError(f"--workers: expected 1 to 32, got {args.workers}")
    cvlog.apply()
    cap = cv2.VideoCapture(args.input)
    if not cap.isOpened():
        raise UsageError(f"{args.input}: not a video OpenCV can read")
    recorder = Recorder(args.output, cap.get(cv2.CAP_PROP_FPS) or 30.0, what="-o")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    jsonl = (
        JsonlWriter(args.jsonl, append=False, what="--jsonl", background=False) if args.jsonl else None
    )  # one file per video
    progress = Progress(total)
    pool = OrderedInference(_client(config, args.workers), args.workers, stop, lambda: _backoff(config))
    try:
        written, complete = _annotate(cap, pool, recorder, jsonl, progress, config, args.input)
    except OutputError as exc:
        raise OutputError(f"{exc} ({args.output} holds the first {progress.done} of {total} frames)") from None
    finally:
        stop.set()  # ends the workers; they are joined before the client they use is closed
        if unfinished := join_all(pool.threads, time.monotonic() + STOP_WORKERS_S):
            log.warning("not finished at exit (the process exits without them): %s", ", ".join(unfinished))
        progress.close()
        cap.release()
        recorder.close()
        pool.client.close()
        if jsonl:
            jsonl.close()
    if pool.error is not None:
        raise pool.error
    if not complete:
        raise Interrupted(f"interrupted: {args.output} holds the first {written} of {total} frames")
    if written == 0:
        raise UsageError(
            f"{args.input}: no frame could be decoded (a header without video data: the file is cut off or corrupt)"
        )
    if written < total:  # a cut-off download or copy: say so rather than end quietly short
        log.warning(
            "%s ended after %d of the %d frames its header announces: the file may be truncated",
            args.input,
            written,
            total,
        )
    log.info(
        "wrote %d frames to %s (%d without detections after the API refused them)", written, args.output, pool.skipped
    )
    return 0


def _annotate(
    cap,
    pool: OrderedInference,
    recorder: Recorder,
    jsonl: JsonlWriter | None,
    progress: Progress,
    config: Config,
    name: str,
) -> tuple[int, bool]:
    """Read, submit (at most 2 per worker ahead) and write back in order.

    Returns the frames written and whether that was the whole file."""
    pending: deque[Job] = deque()
    end_of_file = False
    while not pool.stop.is_set():
        while not end_of_file and len(pending) < 2 * len(pool.threads):
            ok, image = cap.read()
            if not ok:
                end_of_file = True
                break
            # its frame id: the frames written, then those in flight, come before it
            job = Job(progress.done + len(pending), time.time(), image, _upload(image, config))
            pool.jobs.put(job)
            pending.append(job)
        if not pending:
            break
        job = pending[0]
        if not job.done.wait(0.2):
            continue  # poll again: the loop's test ends the wait once stopped (the refill has nothing to add)
        if pool.error is not None:
            break
        pending.popleft()
        if job.parsed is None:  # refused by the API: written without boxes, and no JSONL line
            recorder.write(job.image)
        else:
            result = job.parsed.filtered(config.inference.classes).result_for(
                Frame(name, job.frame_id, job.read_at, time.monotonic(), job.image),
                (job.upload.sent_width, job.upload.sent_height),
                pool.client.model,
                job.sent_at,
                job.received_at,
            )
            recorder.write(draw_result(job.image.copy(), result))
        progress.update()  # counts the frame written, before the JSONL line: a failure there still counts it
        if jsonl and job.parsed is not None:
            jsonl.send(encode_message(result_message(result)))
    return progress.done, end_of_file and not pending
