"""Measure the RTSP -> API -> ZeroMQ path as an outside subscriber sees it, and print figures.

A real GStreamer RTSP server (tests/support) serves a still 1280x720 synthetic scene at 30 fps;
`streamer serve` plays the API with --latency-ms; `streamer run --zmq` publishes; `streamer
listen` (a separate process) receives.  Printed: messages, worst IoU of the received boxes
against the truth in original pixels, result age at publish, results per second, stop time.

    .venv/bin/python bench/rtsp_feed.py [--messages 50] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from streamer.sources.synthetic import SyntheticScene  # noqa: E402
from support.boxes import iou_xyxy, xywh_to_xyxy  # noqa: E402
from support.clips import camera_clip  # noqa: E402
from support.rtsp import RtspServer, free_port  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    args = parser.parse_args()
    streamer = [sys.executable, "-m", "streamer"]
    scene = SyntheticScene(1280, 720, 30.0, moving=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        clip = camera_clip(tmp_path, scene, 90)
        api_port, zmq_port = free_port(), free_port()
        endpoint = f"tcp://127.0.0.1:{zmq_port}"
        with RtspServer(clip=clip) as camera:
            serve = subprocess.Popen(
                [*streamer, "serve", "--port", str(api_port), "--latency-ms", str(args.latency_ms)],
                stderr=subprocess.DEVNULL,
            )
            listen = subprocess.Popen(
                [*streamer, "listen", "--connect", endpoint, "--topic", "detections", "--count", str(args.messages)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            run = subprocess.Popen(
                [
                    *streamer,
                    "run",
                    "--source",
                    camera.url,
                    "--model",
                    "synthetic/1",
                    "--api-url",
                    f"http://127.0.0.1:{api_port}",
                    "--headless",
                    "--zmq",
                    endpoint,
                ],
                stderr=subprocess.DEVNULL,
            )
            try:
                out, _ = listen.communicate(timeout=120)
            finally:
                run.send_signal(signal.SIGTERM)
                stop_started = time.monotonic()
                code = run.wait(10)
                stop_s = time.monotonic() - stop_started
                serve.terminate()
                serve.wait(5)
    messages = [json.loads(line) for line in out.splitlines()]
    truth = dict(scene.boxes(0))
    ious = [iou_xyxy(xywh_to_xyxy(p), truth[p["class"]]) for m in messages for p in m["predictions"]]
    ages = sorted((m["published_at"] - m["captured_at"]) * 1000 for m in messages)
    span = messages[-1]["published_at"] - messages[0]["published_at"]
    print(f"messages received      {len(messages)}")
    print(f"boxes / worst IoU      {len(ious)} / {min(ious):.3f}  (image {messages[0]['image']})")
    print(f"age at publish, ms     p50 {ages[len(ages) // 2]:.0f}  max {ages[-1]:.0f}")
    print(f"results per second     {(len(messages) - 1) / span:.1f}  (API latency {args.latency_ms:g} ms)")
    print(f"SIGTERM to exit        {stop_s:.2f} s, exit code {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
