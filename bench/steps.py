"""What each step of one API call costs in CPU, measured alone: resize, JPEG encode, base64,
prepare_upload with OpenCV's thread pool and without, and one POST on a kept-alive
connection through a bare httpx.Client and through streamer's DetectionClient (httpx too, plus
the capped read and the parse).  prepare_upload and DetectionClient.infer are measured once
more with a 40 ms sleep before each call, as in the running pipeline.  Last, the floor: one
thread doing every step of a call and nothing else (prepare_upload, POST, parse, make_result,
the message, a ZeroMQ send), one call after the other, against stand-in APIs that answer at
once (with a sleep before each call) or after 100, 300 or 600 ms.  No client that sends
these requests from Python with these settings can spend less CPU per call than this.

The stand-in API (fixed boxes, no latency) runs in its own process, as a real server would.
Frames are rendered fresh from the synthetic scene at 1280x720 and cycled, so that the
resize reads memory, not cache.  Prints CPU ms per step (time.process_time, so OpenCV's pool
threads count).

    .venv/bin/python bench/steps.py [--calls 300]
"""

from __future__ import annotations

import argparse
import base64
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from streamer.api.client import DetectionClient
from streamer.imaging import prepare_upload
from streamer.live.dispatch import make_result
from streamer.message import encode_message, result_message
from streamer.outputs.zmq_feed import ZmqPublisher
from streamer.sources.synthetic import SyntheticScene
from streamer.types import Frame
from support.rtsp import free_port

HEADERS = {
    "User-Agent": "streamer-bench",
    "Accept": "*/*",
    "Accept-Encoding": "gzip, deflate",
    "Content-Type": "application/x-www-form-urlencoded",
}
PATH = "/synthetic/1?confidence=0.4&overlap=0.3&api_key=bench"


def cpu_ms(step, n: int) -> float:
    """Mean process CPU of step(i) over n calls, after 5 unmeasured ones."""
    for i in range(5):
        step(i)
    started = time.process_time()
    for i in range(n):
        step(i)
    return (time.process_time() - started) * 1000 / n


def after_sleep_ms(step, n: int, gap_s: float = 0.04) -> float:
    """Mean thread CPU of step(i) when each call follows a sleep of gap_s, as each call in the
    running pipeline does (a call every 40 ms is 25 a second): caches and the core are then
    cold, which a tight loop never sees."""
    for i in range(5):
        step(i)
    total = 0.0
    for i in range(n):
        time.sleep(gap_s)
        started = time.thread_time()
        step(i)
        total += time.thread_time() - started
    return total * 1000 / n


def image_steps(frames: list, n: int) -> None:
    small = [cv2.resize(f, (640, 360), interpolation=cv2.INTER_AREA) for f in frames]
    jpegs = [cv2.imencode(".jpg", s, [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes() for s in small]
    k = len(frames)
    for threads in (cv2.getNumThreads(), 1):
        cv2.setNumThreads(threads)
        print(f"OpenCV threads {threads}:")
        resize_ms = cpu_ms(lambda i: cv2.resize(frames[i % k], (640, 360), interpolation=cv2.INTER_AREA), n)
        print(f"  resize 1280x720 -> 640x360  {resize_ms:6.3f} ms")
        encode_ms = cpu_ms(lambda i: cv2.imencode(".jpg", small[i % k], [cv2.IMWRITE_JPEG_QUALITY, 75]), n)
        print(f"  JPEG encode q75             {encode_ms:6.3f} ms")
        print(f"  prepare_upload (all three)  {cpu_ms(lambda i: prepare_upload(frames[i % k], 640, 75), n):6.3f} ms")
    print(
        f"prepare_upload, each after a 40 ms sleep "
        f"{after_sleep_ms(lambda i: prepare_upload(frames[i % k], 640, 75), min(n, 100)):6.3f} ms"
    )
    print(f"base64 of the JPEG            {cpu_ms(lambda i: base64.b64encode(jpegs[i % k]), n):6.3f} ms")


def http_steps(port: int, body: bytes, n: int) -> None:
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(headers=HEADERS) as client:
        print(
            f"POST, httpx.Client            {cpu_ms(lambda i: client.post(url + PATH, content=body).read(), n):6.3f} ms"
        )
    with DetectionClient(url, "synthetic/1", "bench") as client:
        print(f"DetectionClient.infer (POST + parse) {cpu_ms(lambda i: client.infer(body), n):6.3f} ms")
        print(
            f"DetectionClient.infer, each after a 40 ms sleep "
            f"{after_sleep_ms(lambda i: client.infer(body), min(n, 100)):6.3f} ms"
        )


def start_api(latency_ms: float = 0.0) -> tuple[subprocess.Popen, int]:
    """The stand-in API in its own process, as a real server would be; (process, port)."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import time; from streamer.standin.server import ApiServer; "
                f"ApiServer('127.0.0.1', {port}, latency_ms={latency_ms}, detector=False).start(); "
                "time.sleep(3600)"
            ),
        ],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, port
        except OSError:
            if time.monotonic() > deadline:
                server.terminate()
                raise
            time.sleep(0.1)


def floor_steps(frames: list, port: int, n: int, sleep_s: float) -> dict[str, float]:
    """Thread CPU ms per call of a one-thread loop doing a call's steps and nothing else."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    pub = ZmqPublisher(endpoint)  # what the pipeline publishes with
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    time.sleep(0.3)  # let the subscription reach the publisher
    spent = {"prepare_upload": 0.0, "POST and parse": 0.0, "result and publish": 0.0}
    try:
        with DetectionClient(f"http://127.0.0.1:{port}", "synthetic/1", "bench") as client:
            for i in range(n + 5):  # the first 5 are not counted
                if sleep_s:
                    time.sleep(sleep_s)
                frame = Frame("synthetic", i, time.time(), time.monotonic(), frames[i % len(frames)])
                t0 = time.thread_time()
                upload = prepare_upload(frame.image, 640, 75)
                t1 = time.thread_time()
                sent_at = time.time()
                parsed = client.infer(upload.body)
                t2 = time.thread_time()
                result = make_result(frame, parsed, upload, "synthetic/1", sent_at, time.time())
                pub.send(encode_message(result_message(result)))
                t3 = time.thread_time()
                if i >= 5:
                    for key, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                        spent[key] += seconds
                if not sub.poll(5000):
                    raise RuntimeError("the subscriber got nothing in 5 s")
                sub.recv_multipart()
    finally:
        pub.close()
        sub.close(linger=0)
        context.term()
    return {key: seconds * 1000 / n for key, seconds in spent.items()}


def floor(frames: list, n: int) -> None:
    print(
        "The floor: one thread, a call's steps one after the other, nothing else running "
        "(thread CPU ms per call; ZeroMQ's own I/O thread not counted):"
    )
    for latency_ms, sleep_s in ((0, 0.04), (100, 0.0), (300, 0.0), (600, 0.0)):
        calls = max(20, min(n, round(20 / (latency_ms / 1000 + sleep_s))))  # about 20 s each
        server, port = start_api(latency_ms)
        try:
            spent = floor_steps(frames, port, calls, sleep_s)
        finally:
            server.terminate()
            server.wait(10)
        how = f"API answers after {latency_ms} ms" if latency_ms else "API answers at once, 40 ms sleep first"
        print(
            f"  {how:<40} total {sum(spent.values()):5.2f} ms = "
            + ", ".join(f"{key} {ms:.2f}" for key, ms in spent.items())
            + f"  ({calls} calls)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="measured calls per step")
    args = parser.parse_args()
    scene = SyntheticScene(1280, 720, 30.0)
    frames = [scene.render(i) for i in range(60)]
    image_steps(frames, args.calls)
    body = prepare_upload(frames[0], 640, 75).body
    server, port = start_api()
    try:
        print(f"upload body {len(body)} bytes; the API in another process:")
        http_steps(port, body, args.calls)
    finally:
        server.terminate()
        server.wait(10)
    floor(frames, args.calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
