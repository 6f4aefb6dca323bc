"""``streamer predict`` (one image) and ``streamer video`` (a whole file, every frame, in order)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import cv2
import httpx
import numpy as np

from streamer.backoff import Backoff
from streamer.client import DetectionClient
from streamer.config import resolve_api_key
from streamer.errors import ApiBadRequest, ApiMalformedResponse, ApiTransientError, UsageError
from streamer.imaging import prepare_upload
from streamer.inference import make_result
from streamer.overlay import draw_predictions
from streamer.predictions import filter_classes
from streamer.publish import JsonlWriter, Recorder, encode_message, result_message

log = logging.getLogger(__name__)


def add_commands(sub, api_options) -> None:
    p = sub.add_parser("predict", help="detect objects in one image file or URL and print the JSON")
    p.add_argument("image", metavar="IMAGE_OR_URL")
    api_options(p)
    p.add_argument("--save", metavar="FILE", help="write the image with boxes drawn (locally, or the "
                   "server's drawing with --format image)")
    p.add_argument("--format", choices=("json", "image"), default="json",
                   help="json (default) or image: ask the server for its drawn image (needs --save)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("video", help="annotate a whole video file offline: every frame, in order")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="annotated video (.mp4 or .avi)")
    p.add_argument("--jsonl", metavar="FILE", help="write the detections, one message per frame")
    p.add_argument("--workers", type=int, default=4, metavar="N", help="requests in flight (default 4)")
    api_options(p)
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_video)


def _config(args):
    from streamer.cli import config_from_args

    return config_from_args(args)


def _client(config) -> DetectionClient:
    from streamer.live import make_client

    return make_client(config, resolve_api_key(config))


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


def cmd_predict(args: argparse.Namespace, stop: threading.Event) -> int:
    config = _config(args)
    if args.format == "image" and not args.save:
        raise UsageError("--format image needs --save FILE to write the server's drawn image to")
    client = _client(config)
    with client:
        if args.format == "image":
            if _is_url(args.image):
                data = client.request(image_url=args.image, fmt="image")
            else:
                upload = prepare_upload(_load_image(args.image, config.api.timeout_s),
                                        config.inference.max_side, config.inference.jpeg_quality)
                data = client.request(body=upload.body, fmt="image")
            Path(args.save).write_bytes(data)
            log.info("wrote the server's drawing to %s", args.save)
            return 0
        if _is_url(args.image):  # the server fetches it: boxes are already in its own pixels
            parsed = client.infer_url(args.image)
            image = _load_image(args.image, config.api.timeout_s) if args.save else None
            width, height = parsed.image_width, parsed.image_height
            predictions = filter_classes(parsed.predictions, list(config.inference.classes))
        else:
            image = _load_image(args.image, config.api.timeout_s)
            upload = prepare_upload(image, config.inference.max_side, config.inference.jpeg_quality)
            parsed = client.infer(upload.body)
            sent_at = received_at = time.time()
            from streamer.frames import Frame
            frame = Frame(args.image, 0, sent_at, time.monotonic(), image)
            result = make_result(frame, parsed, upload, client.model, sent_at, received_at,
                                 tuple(config.inference.classes))
            width, height, predictions = result.width, result.height, result.predictions
    response = {"inference_id": parsed.inference_id, "time": parsed.time_s,
                "image": {"width": width, "height": height}, "predictions": predictions, **parsed.extra}
    response = {k: v for k, v in response.items() if v is not None}
    print(json.dumps(response, indent=2))
    if args.save and image is not None:
        if not cv2.imwrite(args.save, draw_predictions(image.copy(), predictions)):
            raise UsageError(f"--save: cannot write {args.save} (use a .jpg or .png name in an existing folder)")
        log.info("wrote %s", args.save)
    return 0


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
            frac = self.done / self.total if self.total else 0.0
            bar = "#" * int(frac * 30)
            self.stream.write(f"\r[{bar:<30}] {self.done}/{self.total or '?'} frames, {rate:.1f} fps")
            self.stream.flush()
        elif self.total and self.done * 10 // self.total != self._last_decile:
            self._last_decile = self.done * 10 // self.total
            log.info("%d/%d frames (%.1f fps)", self.done, self.total, rate)

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")


def _infer_until_done(client: DetectionClient, body: bytes, stop: threading.Event, backoff: Backoff):
    """Offline every frame counts: retry transient failures (with backoff) until it succeeds.

    Returns (parsed response or None, sent_at, received_at)."""
    while True:
        sent_at = time.time()
        try:
            return client.infer(body), sent_at, time.time()
        except ApiTransientError as exc:
            delay = backoff.next_delay(exc.retry_after_s)
            log.warning("%s; retrying this frame in %.1f s", exc, delay)
            if stop.wait(delay):
                return None, sent_at, time.time()
        except (ApiBadRequest, ApiMalformedResponse) as exc:
            log.warning("frame skipped: %s", exc)
            return None, sent_at, time.time()


def cmd_video(args: argparse.Namespace, stop: threading.Event) -> int:
    config = _config(args)
    if not Path(args.input).is_file():
        raise UsageError(f"input video {args.input!r} not found")
    if args.workers < 1 or args.workers > 32:
        raise UsageError(f"--workers: expected 1 to 32, got {args.workers}")
    cap = cv2.VideoCapture(args.input)
    if not cap.isOpened():
        raise UsageError(f"{args.input}: not a video OpenCV can read")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    recorder = Recorder(args.output, fps)
    jsonl = JsonlWriter(args.jsonl) if args.jsonl else None
    client = _client(config)
    progress = Progress(total)
    pending: deque[tuple[int, float, np.ndarray, object, Future]] = deque()
    written = skipped = 0
    settings = config.inference
    try:
        with ThreadPoolExecutor(args.workers, thread_name_prefix="streamer.video") as pool:
            frame_id = 0
            reading = True
            while (reading or pending) and not stop.is_set():
                while reading and len(pending) < args.workers * 2:
                    ok, image = cap.read()
                    if not ok:
                        reading = False
                        break
                    read_at = time.time()
                    upload = prepare_upload(image, settings.max_side, settings.jpeg_quality)
                    future = pool.submit(_infer_until_done, client, upload.body, stop,
                                         Backoff(config.api.backoff_initial_s, config.api.backoff_max_s))
                    pending.append((frame_id, read_at, image, upload, future))
                    frame_id += 1
                if not pending:
                    break
                fid, read_at, image, upload, future = pending[0]
                try:
                    parsed, sent_at, received_at = future.result(timeout=0.5)
                except FutureTimeout:
                    continue
                pending.popleft()
                if parsed is None:
                    skipped += 1
                    recorder.write(image)
                else:
                    from streamer.frames import Frame
                    frame = Frame(args.input, fid, read_at, time.monotonic(), image)
                    result = make_result(frame, parsed, upload, client.model, sent_at, received_at,
                                         tuple(settings.classes))
                    recorder.write(draw_predictions(image.copy(), result.predictions))
                    if jsonl:
                        jsonl.send(encode_message(result_message(result)))
                written += 1
                progress.update()
            if stop.is_set():
                for *_, future in pending:
                    future.cancel()
    finally:
        progress.close()
        cap.release()
        recorder.close()
        client.close()
        if jsonl:
            jsonl.close()
    log.info("wrote %d frames to %s (%d without detections after API errors)", written, args.output, skipped)
    return 0
