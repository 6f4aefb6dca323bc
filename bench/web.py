"""The web page's cost to the pipeline: streamer run on the synthetic 1280x720 30 fps scene,
against the stand-in API (its real detector, its own process), served with --http.

Four runs of --seconds each (after a 5 s warm-up), one process per part:
  off     no --http at all: CPU and RSS only (there is no /api/status to read the rates from);
  none    --http, no viewer: no JPEG is encoded for the web;
  one     one viewer of /stream.mjpg at 10 fps (the default output.http_fps);
  twenty  20 viewers plus one client that connects to /stream.mjpg and never reads.
Measured: streamer's CPU (% of one core) and RSS, capture fps and results/s from its own
counters (/api/status at the start and end of the window), and the frames each viewer got.
The pass line: capture fps and results/s of "twenty" within 10 % of "none".

    .venv/bin/python bench/web.py [--seconds 30] [--json bench/results/web.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from throughput import proc_cpu_s  # bench/throughput.py, beside this file
from throughput import proc_rss_mb as proc_rss_mib

ROOT = Path(__file__).resolve().parent.parent
WARMUP_S = 5.0
RUNS = {"off": (0, 0), "none": (0, 0), "one": (1, 0), "twenty": (20, 1)}  # (viewers, clients that never read)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout_s:g} s")


def view(url: str, viewers: int, stalled: int, seconds: float) -> None:
    """Viewer mode (its own process): print the frames each viewer read, and over how long, as JSON."""
    started = time.monotonic()
    stop = started + seconds
    counts = [0] * viewers
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    sockets = []
    for _ in range(stalled):  # connects, asks for the stream, then never reads a byte
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: bench\r\n\r\n")
        sockets.append(sock)

    def read(i: int) -> None:
        with httpx.stream("GET", url + "stream.mjpg", timeout=10) as response:
            for chunk in response.iter_raw():
                counts[i] += chunk.count(b"--frame\r\n")
                if time.monotonic() > stop:
                    return

    threads = [threading.Thread(target=read, args=(i,), daemon=True) for i in range(viewers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 10)
    for sock in sockets:
        sock.close()
    print(json.dumps({"frames": counts, "seconds": time.monotonic() - started}), flush=True)


def run_without_http(seconds: float, api_url: str) -> dict:
    args = ["run", "--source", "synthetic", "--headless", "--api-url", api_url]
    args += ["--model", "synthetic/1", "--max-fps", "30", "--max-in-flight", "4", "--log-level", "warning"]
    streamer = subprocess.Popen(
        [sys.executable, "-m", "streamer", *args], cwd=ROOT, env=os.environ | {"ROBOFLOW_API_KEY": ""}
    )
    try:
        time.sleep(WARMUP_S + 2)
        cpu0, t0 = proc_cpu_s(streamer.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1, rss = proc_cpu_s(streamer.pid), time.monotonic(), proc_rss_mib(streamer.pid)
    finally:
        streamer.terminate()
        streamer.wait(10)
    return {"run": "off", "cpu_percent": round((cpu1 - cpu0) / (t1 - t0) * 100, 1), "rss_mib": round(rss, 1)}


def run(name: str, seconds: float, api_url: str) -> dict:
    if name == "off":
        return run_without_http(seconds, api_url)
    viewers, stalled = RUNS[name]
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    args = ["run", "--source", "synthetic", "--headless", "--http", str(port), "--api-url", api_url]
    args += ["--model", "synthetic/1", "--max-fps", "30", "--max-in-flight", "4", "--log-level", "warning"]
    env = {**os.environ, "ROBOFLOW_API_KEY": ""}
    streamer = subprocess.Popen([sys.executable, "-m", "streamer", *args], cwd=ROOT, env=env)
    client = None
    try:
        wait_for(url + "healthz", 20)
        if viewers or stalled:
            mode = ["--view", url, "--viewers", str(viewers), "--stalled", str(stalled)]
            cmd = [sys.executable, __file__, *mode, "--seconds", str(seconds + WARMUP_S + 2)]
            client = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        time.sleep(WARMUP_S)
        before, cpu0, t0 = httpx.get(url + "api/status").json(), proc_cpu_s(streamer.pid), time.monotonic()
        time.sleep(seconds)
        after, cpu1, t1 = httpx.get(url + "api/status").json(), proc_cpu_s(streamer.pid), time.monotonic()
        rss = proc_rss_mib(streamer.pid)
        viewed = json.loads(client.communicate(timeout=seconds + 30)[0]) if client else None
    finally:
        streamer.terminate()
        streamer.wait(10)
        if client and client.poll() is None:
            client.kill()
    span = t1 - t0
    delta = {k: after["counters"][k] - before["counters"][k] for k in ("frames_read", "results")}
    return {
        "run": name,
        "viewers": viewers,
        "never_reading": stalled,
        "cpu_percent": round((cpu1 - cpu0) / span * 100, 1),
        "rss_mib": round(rss, 1),
        "capture_fps": round(delta["frames_read"] / span, 2),
        "results_per_s": round(delta["results"] / span, 2),
        "viewer_fps": round(sum(viewed["frames"]) / len(viewed["frames"]) / viewed["seconds"], 2) if viewed else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--json", type=Path)
    p.add_argument("--view", help=argparse.SUPPRESS)
    p.add_argument("--viewers", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--stalled", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.view:
        view(args.view, args.viewers, args.stalled, args.seconds)
        return
    api_port = free_port()
    api = subprocess.Popen([sys.executable, "-m", "streamer", "serve", "--port", str(api_port)], cwd=ROOT)
    try:
        wait_for(f"http://127.0.0.1:{api_port}/", 20)
        rows = [run(name, args.seconds, f"http://127.0.0.1:{api_port}") for name in RUNS]
    finally:
        api.terminate()
        api.wait(10)
    base = rows[1]
    for row in rows[1:]:
        row["capture_vs_none"] = round(row["capture_fps"] / base["capture_fps"] - 1, 3)
        row["results_vs_none"] = round(row["results_per_s"] / base["results_per_s"] - 1, 3)
        print(json.dumps(row), flush=True)
    print(json.dumps(rows[0]))
    ok = all(abs(r["capture_vs_none"]) <= 0.10 and abs(r["results_vs_none"]) <= 0.10 for r in rows[1:])
    print(f"capture fps and results/s within 10 % of no viewers: {'yes' if ok else 'NO'}")
    if args.json:
        machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "shared": True}
        args.json.write_text(json.dumps({"machine": machine, "seconds": args.seconds, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
