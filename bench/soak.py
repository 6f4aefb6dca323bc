"""Soak: `streamer run` for minutes against a flapping RTSP camera and a flapping API.

A real GStreamer RTSP server (tests/support) plays a 1280x720 synthetic scene; a local
stand-in API answers with 50 ms latency.  In turns, the camera is killed for a few seconds
and started again, then the API is switched through one fault (503 and 429 with
Retry-After, hanging answers, refused connections, an HTML page, broken JSON) and healed.
A ZeroMQ subscriber in this process times every recovery from the outside: from the
moment the camera or API is back to the first detections message for a frame captured
(camera) or answered (API) after it.

Printed, and written as JSON: restarts survived, recovery times (p50 and max), RSS and
thread count of the streamer process at start and end, messages published, and how it
stopped.

    .venv/bin/python bench/soak.py [--minutes 10] [--json bench/results/soak.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.clips import camera_clip  # noqa: E402
from support.rtsp import RtspServer, free_port  # noqa: E402

from feed import Feed  # noqa: E402

from streamer.standin.server import ApiServer, Fault  # noqa: E402
from streamer.sources.synthetic import SyntheticScene  # noqa: E402

API_FAULTS = [
    ("503 + Retry-After", lambda: Fault(503, "model loading", retry_after="1", label="503")),
    ("429 + Retry-After", lambda: Fault(429, "rate limited", retry_after="2", label="429")),
    ("hanging answers", lambda: Fault(504, "slow", hang_s=15, label="hang")),
    ("refused connections", None),
    ("HTML page", lambda: Fault(200, raw_body=b"<html><h1>502 Bad Gateway</h1></html>", label="html")),
    ("broken JSON", lambda: Fault(200, raw_body=b'{"predictions": [{"x":', label="badjson")),
]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (kB) and Threads of a process, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "soak.json"))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    scene = SyntheticScene(1280, 720, 30.0, moving=False)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        clip = camera_clip(tmp_path, scene, 90)
        api_port, zmq_port = free_port(), free_port()
        endpoint = f"tcp://127.0.0.1:{zmq_port}"
        api = ApiServer("127.0.0.1", api_port, latency_ms=50, jitter=0.1).start()
        camera = RtspServer(clip=clip).start()
        config = tmp_path / "soak.yaml"
        # Defaults throughout, except a shorter API timeout so that a hang costs 3 s, not 10, and
        # 10 calls a second (the default 2 would time recoveries in half-second steps).
        config.write_text(f"source:\n  uri: {camera.url}\napi:\n  url: {api.url}\n  model: synthetic/1\n"
                          f"  timeout_s: 3.0\ninference:\n  max_fps: 10\noutput:\n  headless: true\n"
                          f"  zmq: {endpoint}\n")
        feed = Feed(endpoint)
        log_path = tmp_path / "streamer.log"
        with open(log_path, "wb") as log_file:
            run = subprocess.Popen([sys.executable, "-m", "streamer", "run", "-c", str(config)],
                                   stdout=subprocess.DEVNULL, stderr=log_file, cwd=tmp_path,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
            report = soak(run, camera, api, api_port, feed, rng, args.minutes)
            started = time.monotonic()
            run.send_signal(signal.SIGTERM)
            try:
                code = run.wait(10)
            except subprocess.TimeoutExpired:
                run.kill()
                code = run.wait(5)
            report["sigterm_exit_code"] = code
            report["sigterm_exit_s"] = round(time.monotonic() - started, 2)
        time.sleep(0.3)
        feed.close()
        camera.stop()
        api.stop()
        log = log_path.read_text(errors="replace")
        report["stop_line"] = next((line.split(": ", 1)[1] for line in reversed(log.splitlines())
                                    if "stopped:" in line), None)
        report["tracebacks_in_log"] = log.count("Traceback")
        report["messages_received"] = len(feed.detections)
        report["heartbeats_received"] = len(feed.heartbeats)
    print_report(report)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.json}")
    ok = (report["sigterm_exit_code"] == 0 and report["rss_growth_mb"] <= 10
          and report["threads_start"] == report["threads_end"] and not report["failed_recoveries"])
    return 0 if ok else 1


def soak(run, camera, api, api_port, feed, rng, minutes: float) -> dict:
    if feed.wait_for("captured_at", 0, 60) is None:
        raise SystemExit("streamer produced no detections in 60 s")
    time.sleep(20)  # warm-up: imports, first allocations, pools filled
    start = proc_status(run.pid)
    t0 = time.monotonic()
    deadline = t0 + minutes * 60
    camera_s: list[float] = []
    api_s: dict[str, list[float]] = {name: [] for name, _ in API_FAULTS}
    failed: list[str] = []
    turn = 0
    while time.monotonic() < deadline - 30:
        # The camera drops for 2-8 s and comes back.
        camera.kill()
        time.sleep(rng.uniform(2, 8))
        camera.start()
        back = time.time()
        message = feed.wait_for("captured_at", back, 60)
        if message is None:
            failed.append(f"camera restart {len(camera_s) + 1}")
        else:
            camera_s.append(message["captured_at"] - back)
        time.sleep(rng.uniform(3, 6))
        # The API fails in one way for 4-12 s and heals.
        name, make = API_FAULTS[turn % len(API_FAULTS)]
        turn += 1
        if make is None:
            api.stop()
            time.sleep(rng.uniform(4, 12))
            api = ApiServer("127.0.0.1", api_port, latency_ms=50, jitter=0.1).start()
        else:
            api.set_fault(make())
            time.sleep(rng.uniform(4, 12))
            api.set_fault(None)
        healed = time.time()
        message = feed.wait_for("received_at", healed, 90)
        if message is None:
            failed.append(f"API {name}")
        else:
            api_s[name].append(message["received_at"] - healed)
        time.sleep(rng.uniform(3, 6))
        if run.poll() is not None:
            failed.append(f"streamer exited with {run.returncode}")
            break
    time.sleep(10)  # settle: abandoned requests time out, the last recovery completes
    end = proc_status(run.pid)
    every_api = [s for values in api_s.values() for s in values]
    return {
        "minutes": round((time.monotonic() - t0) / 60, 2),
        "camera_restarts": len(camera_s) + sum(f.startswith("camera") for f in failed),
        "camera_restarts_survived": len(camera_s),
        "camera_recovery_s": summary(camera_s),
        "api_faults": len(every_api) + sum(f.startswith("API") for f in failed),
        "api_faults_survived": len(every_api),
        "api_recovery_s": summary(every_api),
        "api_recovery_by_fault_s": {name: summary(values) for name, values in api_s.items()},
        "failed_recoveries": failed,
        "rss_start_mb": round(start["VmRSS"] / 1024, 1),
        "rss_end_mb": round(end["VmRSS"] / 1024, 1),
        "rss_growth_mb": round((end["VmRSS"] - start["VmRSS"]) / 1024, 1),
        "threads_start": start["Threads"],
        "threads_end": end["Threads"],
    }


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(statistics.median(values), 2), "max": round(max(values), 2)}


def print_report(r: dict) -> None:
    def fmt(s: dict) -> str:
        return f"p50 {s['p50']:.2f} s, max {s['max']:.2f} s (n={s['n']})" if s.get("n") else "none"

    print(f"soak length            {r['minutes']} min")
    print(f"camera restarts        {r['camera_restarts_survived']} of {r['camera_restarts']} survived; "
          f"recovery {fmt(r['camera_recovery_s'])}")
    print(f"API faults             {r['api_faults_survived']} of {r['api_faults']} survived; "
          f"recovery {fmt(r['api_recovery_s'])}")
    for name, s in r["api_recovery_by_fault_s"].items():
        print(f"  {name:<21}{fmt(s)}")
    print(f"failed recoveries      {r['failed_recoveries'] or 'none'}")
    print(f"RSS                    {r['rss_start_mb']} MB -> {r['rss_end_mb']} MB ({r['rss_growth_mb']:+} MB)")
    print(f"threads                {r['threads_start']} -> {r['threads_end']}")
    print(f"messages received      {r['messages_received']} detections, {r['heartbeats_received']} heartbeats")
    print(f"streamer's own count   {r['stop_line']}")
    print(f"SIGTERM                exit {r['sigterm_exit_code']} in {r['sigterm_exit_s']} s; "
          f"tracebacks in its log: {r['tracebacks_in_log']}")


if __name__ == "__main__":
    sys.exit(main())
