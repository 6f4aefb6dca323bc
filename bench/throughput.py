"""Throughput and freshness: the sequential loop of the usual examples against streamer with
1, 2, 4 and 8 requests in flight, at 100, 300 and 600 ms of API latency.

A local stand-in API (in this process) answers with the injected latency, +-10 % jitter.
The source is the synthetic scene, 1280x720 at 30 fps.  Each client runs as its own
process for --seconds (60) after a 5 s warm-up:

  (a) sequential: read a frame, resize, encode (JPEG quality 95, as cv2.imencode does by
      default), base64, POST with a new connection, wait for the answer, repeat;
  (b) `streamer run --max-in-flight N --max-fps 1000`, measured from a ZeroMQ subscriber.

Measured: results a second, result age at publish (p50, p95, and p95 of each half of the
window to show a trend), the gap between results (mean, coefficient of variation),
client CPU per API call (the whole process but the capture thread, which renders the
synthetic scene in the camera's place), the part of it the request threads spend on the
steps of the calls (resize, encode, base64, HTTP, parse, publish; their idle wake-ups
excepted), process CPU per call and per captured frame, RSS at start and end, and bytes
uploaded per call against a full-size quality-95 JPEG of the same frame.  Then one 5-minute
streamer run (N 4, 300 ms) for RSS growth.  Prints a table and writes JSON.

    .venv/bin/python bench/throughput.py [--seconds 60] [--rss-minutes 5] [--json bench/results/throughput.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.rtsp import free_port  # noqa: E402

from feed import Feed  # noqa: E402

from streamer.standin.server import ApiServer  # noqa: E402

WARMUP_S = 5.0
SOURCE_FPS = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def full_size_q95_bytes() -> int:
    """What the same frame costs sent as inference_sdk does by default: full size, quality 95."""
    import cv2

    from streamer.sources.synthetic import SyntheticScene

    frame = SyntheticScene(1280, 720, SOURCE_FPS).render(0)
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return len(base64.b64encode(jpeg.tobytes()))


# --- (a) the sequential loop, run as its own process -------------------------------------

def sequential_worker(url: str, seconds: float, out_path: str) -> None:
    """Read, resize, encode, POST, wait: what the usual webcam examples do."""
    import cv2
    import httpx

    from streamer.sources.open import SyntheticSource

    source = SyntheticSource(1280, 720, SOURCE_FPS)
    source.open()
    records, frames = [], 0
    started = time.monotonic()
    cpu_at = rss_at = None
    while time.monotonic() - started < WARMUP_S + seconds:
        image = source.read()
        captured_at = time.time()
        frames += 1
        height, width = image.shape[:2]
        scale = 640 / max(height, width)
        small = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", small)
        body = base64.b64encode(jpeg.tobytes())
        response = httpx.post(url, params={"confidence": 0.4}, content=body,
                              headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
        response.json()
        now = time.monotonic()
        if cpu_at is None and now - started >= WARMUP_S:
            cpu_at, rss_at, frames_at = time.process_time(), proc_rss_mb(os.getpid()), frames
        if cpu_at is not None:
            records.append({"captured_at": captured_at, "published_at": time.time(), "bytes": len(body)})
    Path(out_path).write_text(json.dumps({
        "records": records, "cpu_s": time.process_time() - cpu_at, "frames": frames - frames_at,
        "rss_start_mb": rss_at, "rss_end_mb": proc_rss_mb(os.getpid())}))


def run_sequential(url: str, seconds: float, tmp: Path) -> dict:
    out = tmp / "sequential.json"
    subprocess.run([sys.executable, __file__, "--sequential-worker", url, "--seconds", str(seconds),
                    "--out", str(out)], check=True, timeout=seconds + 120)
    data = json.loads(out.read_text())
    records = data["records"]
    return figures(records, len(records), data["frames"], data["cpu_s"], data["rss_start_mb"], data["rss_end_mb"],
                   statistics.mean(r["bytes"] for r in records), None)


# --- (b) streamer, measured from a ZeroMQ subscriber ----------------------------------------

def run_streamer(url: str, n: int, seconds: float, tmp: Path) -> dict:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = Feed(endpoint)
    with open(tmp / f"streamer-{n}.log", "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "run", "--source", "synthetic", "--model",
                                 "synthetic/1", "--api-url", url, "--headless", "--zmq", endpoint,
                                 "--max-in-flight", str(n), "--max-fps", "1000"],
                                stdout=subprocess.DEVNULL, stderr=log_file, cwd=tmp)
        try:
            time.sleep(WARMUP_S)
            # CPU is read as a heartbeat arrives, so that it and the heartbeat's counters
            # cover the same window.
            status0 = next_heartbeat(sub)
            cpu0, rss0, window_start = proc_cpu_s(proc.pid), proc_rss_mb(proc.pid), time.time()
            time.sleep(seconds)
            status1 = next_heartbeat(sub)
            cpu1, rss1, window_end = proc_cpu_s(proc.pid), proc_rss_mb(proc.pid), time.time()
        finally:
            proc.terminate()
            proc.wait(10)
    sub.close()
    records = [m for m in sub.detections if window_start <= m["published_at"] < window_end]
    c0, c1 = status0["counters"], status1["counters"]
    calls = c1["requests"] - c0["requests"]
    frames = c1["frames_read"] - c0["frames_read"]
    # The client is every thread but the capture thread, which stands in for the camera (it
    # renders the synthetic scene): the request threads (resize, encode, base64, HTTP, parse),
    # the dispatcher, the output loop (publish), ZeroMQ's I/O thread, and anything else.
    capture_cpu = c1["capture_cpu_s"] - c0["capture_cpu_s"]
    client_cpu = (cpu1 - cpu0) - capture_cpu
    out = figures(records, calls, frames, cpu1 - cpu0, rss0, rss1, (c1["bytes_sent"] - c0["bytes_sent"]) / calls,
                  client_cpu / calls)
    threads = {k.removesuffix("_cpu_s"): c1[k] - c0[k] for k in ("request_cpu_s", "dispatch_cpu_s", "output_cpu_s")}
    threads["other"] = client_cpu - sum(threads.values())
    out["client_cpu_ms_per_call_by_thread"] = {k: round(v * 1000 / calls, 2) for k, v in threads.items()}
    # The request threads' CPU on the steps of the calls themselves (resize, encode, base64, HTTP,
    # parse, publish), without their idle wake-ups: the work the client must do for each call.
    out["steps_cpu_ms_per_call"] = round((c1["steps_cpu_s"] - c0["steps_cpu_s"]) * 1000 / calls, 2)
    out["late_dropped"] = c1["late_results"] - c0["late_results"]
    out["capture_cpu_ms_per_frame"] = round(capture_cpu * 1000 / frames, 2)
    return out


def next_heartbeat(sub: Feed) -> dict:
    """The next heartbeat to arrive (streamer sends one every 2 s)."""
    seen = len(sub.heartbeats)
    deadline = time.monotonic() + 5
    while len(sub.heartbeats) == seen and time.monotonic() < deadline:
        time.sleep(0.002)
    return sub.heartbeats[-1]


def figures(records: list[dict], calls: int, frames: int, cpu_s: float, rss0: float, rss1: float,
            bytes_per_call: float, client_cpu_per_call_s: float | None) -> dict:
    published = [r["published_at"] for r in records]
    ages = [(r["published_at"] - r["captured_at"]) * 1000 for r in records]
    span = published[-1] - published[0] if len(published) > 1 else float("nan")
    gaps = [b - a for a, b in zip(published, published[1:], strict=False)]
    half = len(ages) // 2
    return {
        "results_per_s": round((len(records) - 1) / span, 2) if len(records) > 1 else 0.0,
        "age_p50_ms": round(quantile(ages, 0.5), 1), "age_p95_ms": round(quantile(ages, 0.95), 1),
        "age_p95_first_half_ms": round(quantile(ages[:half], 0.95), 1),
        "age_p95_second_half_ms": round(quantile(ages[half:], 0.95), 1),
        "gap_mean_ms": round(statistics.mean(gaps) * 1000, 1),
        "gap_cv": round(statistics.pstdev(gaps) / statistics.mean(gaps), 3),
        "calls": calls, "frames": frames,
        "process_cpu_ms_per_call": round(cpu_s * 1000 / calls, 2),
        "process_cpu_ms_per_frame": round(cpu_s * 1000 / frames, 2),
        "client_cpu_ms_per_call": None if client_cpu_per_call_s is None else round(client_cpu_per_call_s * 1000, 2),
        "rss_start_mb": round(rss0, 1), "rss_end_mb": round(rss1, 1),
        "bytes_per_call": round(bytes_per_call),
    }


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def rss_run(url: str, minutes: float, tmp: Path) -> dict:
    with open(tmp / "rss.log", "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "run", "--source", "synthetic", "--model",
                                 "synthetic/1", "--api-url", url, "--headless", "--max-in-flight", "4",
                                 "--max-fps", "1000"], stdout=subprocess.DEVNULL, stderr=log_file, cwd=tmp)
        try:
            time.sleep(20)  # warm-up
            start = proc_rss_mb(proc.pid)
            samples = []
            deadline = time.monotonic() + minutes * 60
            while time.monotonic() < deadline:
                time.sleep(min(15, max(0.0, deadline - time.monotonic())))
                samples.append(round(proc_rss_mb(proc.pid), 1))
        finally:
            proc.terminate()
            proc.wait(10)
    return {"minutes": minutes, "rss_start_mb": round(start, 1), "rss_end_mb": samples[-1],
            "rss_growth_mb": round(samples[-1] - start, 1), "samples_mb": samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--latencies", default="100,300,600")
    parser.add_argument("--in-flight", default="1,2,4,8")
    parser.add_argument("--rss-minutes", type=float, default=5.0)
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "throughput.json"))
    parser.add_argument("--sequential-worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sequential_worker:
        sequential_worker(args.sequential_worker, args.seconds, args.out)
        return 0
    import tempfile

    rows = []
    full_q95 = full_size_q95_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        for latency_ms in [float(x) for x in args.latencies.split(",")]:
            with ApiServer("127.0.0.1", 0, latency_ms=latency_ms, jitter=0.1, detector=False) as server:
                url = f"{server.url}/synthetic/1"
                row = run_sequential(url, args.seconds, tmp_path)
                rows.append({"latency_ms": latency_ms, "client": "sequential", "in_flight": 1, **row})
                print(line(rows[-1], full_q95), flush=True)
                for n in [int(x) for x in args.in_flight.split(",")]:
                    row = run_streamer(server.url, n, args.seconds, tmp_path)
                    rows.append({"latency_ms": latency_ms, "client": "streamer", "in_flight": n, **row})
                    print(line(rows[-1], full_q95), flush=True)
        rss = None
        if args.rss_minutes > 0:
            with ApiServer("127.0.0.1", 0, latency_ms=300, jitter=0.1, detector=False) as server:
                rss = rss_run(server.url, args.rss_minutes, tmp_path)
    report = {"machine": machine(), "seconds": args.seconds, "source": "synthetic 1280x720 at 30 fps",
              "full_size_q95_bytes": full_q95, "rows": rows, "rss_run": rss}
    print()
    print_table(report)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {args.json}")
    return 0


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {platform.system()}"


def target(row: dict) -> float | None:
    if row["client"] != "streamer":
        return None
    return 0.9 * min(SOURCE_FPS, row["in_flight"] / (row["latency_ms"] / 1000))


def line(row: dict, full_q95: int) -> str:
    tgt = target(row)
    age_limit = row["latency_ms"] + 2000 / SOURCE_FPS + 30
    cpu = row["client_cpu_ms_per_call"]
    steps = row.get("steps_cpu_ms_per_call")
    return (f"| {row['latency_ms']:>4.0f} | {row['client']:<10} | {row['in_flight']:>2} "
            f"| {row['results_per_s']:>6.2f} | {'-' if tgt is None else f'{tgt:.2f}':>6} "
            f"| {row['age_p50_ms']:>5.0f} | {row['age_p95_ms']:>5.0f} | {age_limit:>5.0f} "
            f"| {row['age_p95_first_half_ms']:>4.0f}/{row['age_p95_second_half_ms']:<4.0f} "
            f"| {row['gap_mean_ms']:>5.0f} | {row['gap_cv']:>5.2f} "
            f"| {'-' if cpu is None else f'{cpu:.2f}':>5} | {'-' if steps is None else f'{steps:.2f}':>5} "
            f"| {row['process_cpu_ms_per_call']:>6.2f} "
            f"| {row['process_cpu_ms_per_frame']:>5.2f} "
            f"| {row['rss_start_mb']:>5.0f} -> {row['rss_end_mb']:<5.0f} "
            f"| {row['bytes_per_call']:>6} ({row['bytes_per_call'] / full_q95:.2f}) |")


HEADER = ("| L ms | client     |  N | res/s  | target |  p50  |  p95  | limit | p95 1st/2nd half "
          "| gap ms |  CV  | cli ms/call | steps ms/call | proc ms/call | proc ms/frame | RSS MB | bytes/call (of q95) |")


def print_table(report: dict) -> None:
    print(f"machine: {report['machine']}; source {report['source']}; {report['seconds']:.0f} s each; "
          f"a full-size quality-95 JPEG of the frame is {report['full_size_q95_bytes']} bytes (base64)")
    print(HEADER)
    print("|" + "---|" * 17)
    for row in report["rows"]:
        print(line(row, report["full_size_q95_bytes"]))
    rss = report["rss_run"]
    if rss:
        print(f"RSS over a {rss['minutes']:g}-minute run (N 4, 300 ms): {rss['rss_start_mb']} MB -> "
              f"{rss['rss_end_mb']} MB ({rss['rss_growth_mb']:+} MB)")


if __name__ == "__main__":
    sys.exit(main())
