"""Throughput and freshness: the sequential loop of the usual examples, the obvious concurrent
client and streamer, with 1, 2, 4 and 8 requests in flight, at 100, 300 and 600 ms of API latency.

A local stand-in API (in this process) answers with the injected latency, +-10 % jitter.
The source is the synthetic scene, 1280x720 at 30 fps.  Each client runs as its own
process for --seconds (60) after a 5 s warm-up:

  (a) sequential: read a frame, resize, encode (JPEG quality 95, as cv2.imencode does by
      default), base64, POST with a new connection, wait for the answer, repeat;
  (b) obvious (issue 12 item 7): a capture thread renders the scene at 30 fps into a one-slot
      holder (newest wins); N worker threads each take a frame no other took, resize to
      640 px (INTER_AREA), encode (quality 75), base64 and POST through one shared
      keep-alive httpx.Client, parse, record;
  (c) `streamer run --max-in-flight N --max-fps 1000`, measured from a ZeroMQ subscriber.

Measured: results a second, result age at publish (p50, p95, and p95 of each half of the
window to show a trend), the gap between results (mean, coefficient of variation), the whole
process's CPU (from /proc) per result, per API call and per captured frame, RSS at start and
end, and bytes uploaded per call against a full-size quality-95 JPEG of the same frame.
Client CPU per call: the whole process but the capture thread, which renders the synthetic
scene in the camera's place (for streamer, where its heartbeat gives CPU by thread, with the
part the request threads spend on the steps of the calls).  Each streamer row is checked
against the obvious client's of the same latency and N with the targets of issue 12.  Then
one 5-minute streamer run (N 4, 300 ms) for RSS growth.  Prints a table and writes JSON.

    .venv/bin/python bench/throughput.py [--seconds 60] [--rss-minutes 5] [--json bench/results/throughput.json]
    .venv/bin/python bench/throughput.py --latency-ms 300 --in-flight 8 --clients obvious,streamer
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from feed import Feed  # noqa: E402

from streamer.standin.server import ApiServer  # noqa: E402
from support.rtsp import free_port  # noqa: E402

WARMUP_S = 5.0
FULL_LATENCIES, FULL_IN_FLIGHT = "100,300,600", "1,2,4,8"
CLIENTS = ("sequential", "obvious", "streamer")
SOURCE_FPS = 30.0
API_KEY = "bench-key"  # every client sends one, as to the hosted API (the stand-in takes any)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
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
        response = httpx.post(
            url, params={"api_key": API_KEY, "confidence": 0.4}, content=body, headers=FORM, timeout=10
        )
        response.json()
        now = time.monotonic()
        if cpu_at is None and now - started >= WARMUP_S:
            cpu_at, rss_at, frames_at = time.process_time(), proc_rss_mb(os.getpid()), frames
        if cpu_at is not None:
            records.append({"captured_at": captured_at, "published_at": time.time(), "bytes": len(body)})
    Path(out_path).write_text(
        json.dumps(
            {
                "records": records,
                "cpu_s": time.process_time() - cpu_at,
                "frames": frames - frames_at,
                "rss_start_mb": rss_at,
                "rss_end_mb": proc_rss_mb(os.getpid()),
            }
        )
    )


def run_sequential(url: str, seconds: float, tmp: Path) -> dict:
    out = tmp / "sequential.json"
    subprocess.run(
        [sys.executable, __file__, "--sequential-worker", url, "--seconds", str(seconds), "--out", str(out)],
        check=True,
        timeout=seconds + 120,
    )
    data = json.loads(out.read_text())
    records = data["records"]
    return figures(
        records,
        len(records),
        data["frames"],
        data["cpu_s"],
        data["rss_start_mb"],
        data["rss_end_mb"],
        statistics.mean(r["bytes"] for r in records),
        None,
    )


# --- (b) the obvious concurrent client, run as its own process ---------------------------


class LatestFrame:
    """A one-slot holder: the capture thread puts (the newest wins), a worker takes a frame
    that no worker has taken yet."""

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._item: tuple[float, object] | None = None

    def put(self, captured_at: float, image) -> None:
        with self._ready:
            self._item = (captured_at, image)
            self._ready.notify()

    def take(self, timeout_s: float) -> tuple[float, object] | None:
        with self._ready:
            if not self._ready.wait_for(lambda: self._item is not None, timeout_s):
                return None
            item, self._item = self._item, None
            return item


def obvious_worker(api_url: str, n: int, seconds: float, out_path: str) -> None:
    """A capture thread rendering the scene at its frame rate into a LatestFrame, and n threads
    each paced by it (a frame no other has taken): resize, encode, base64, POST through one
    shared keep-alive httpx.Client, parse, record."""
    import cv2
    import httpx

    from streamer.sources.synthetic import SyntheticScene

    # As streamer does (streamer.imaging.limit_opencv_threads): OpenCV's own thread pool
    # spins on 2 cores, and a one-line setting should not decide the comparison.
    cv2.setNumThreads(1)
    stop, holder, records, errors = threading.Event(), LatestFrame(), [], []
    frames, capture_cpu_s = [0], [0.0]  # written by the capture thread, read by this one

    def capture() -> None:
        scene, due = SyntheticScene(1280, 720, SOURCE_FPS), time.monotonic()
        while not stop.wait(max(0.0, due - time.monotonic())):
            holder.put(time.time(), scene.render(frames[0]))
            frames[0], due, capture_cpu_s[0] = frames[0] + 1, due + 1 / SOURCE_FPS, time.thread_time()

    def request(http: httpx.Client) -> None:
        params = {"api_key": API_KEY, "confidence": 0.4}
        while not stop.is_set():
            item = holder.take(0.5)
            if item is None:
                continue
            captured_at, image = item
            height, width = image.shape[:2]
            scale = min(1.0, 640 / max(height, width))
            if scale < 1.0:
                image = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
            ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 75])
            body = base64.b64encode(jpeg.tobytes())
            try:
                response = http.post(api_url, params=params, content=body, headers=FORM)
                response.raise_for_status()
                response.json()
            except (httpx.HTTPError, ValueError) as exc:
                errors.append(exc.__class__.__name__)
                continue
            records.append({"captured_at": captured_at, "published_at": time.time(), "bytes": len(body)})

    pid = os.getpid()
    with httpx.Client(timeout=10.0) as http:
        threads = [threading.Thread(target=capture, name="capture")]
        threads += [threading.Thread(target=request, args=(http,), name=f"request-{i}") for i in range(n)]
        for thread in threads:
            thread.start()
        stop.wait(WARMUP_S)
        cpu0, rss0, frames0, capture0, window_start = (
            proc_cpu_s(pid),
            proc_rss_mb(pid),
            frames[0],
            capture_cpu_s[0],
            time.time(),
        )
        stop.wait(seconds)
        cpu1, rss1, frames1, capture1, window_end = (
            proc_cpu_s(pid),
            proc_rss_mb(pid),
            frames[0],
            capture_cpu_s[0],
            time.time(),
        )
        stop.set()
        for thread in threads:
            thread.join(15)  # a request in flight ends within the client's timeout
    Path(out_path).write_text(
        json.dumps(
            {
                "records": records,
                "errors": len(errors),
                "window": [window_start, window_end],
                "frames": frames1 - frames0,
                "cpu_s": cpu1 - cpu0,
                "capture_cpu_s": capture1 - capture0,
                "rss_start_mb": rss0,
                "rss_end_mb": rss1,
            }
        )
    )


def run_obvious(api_url: str, n: int, seconds: float, tmp: Path) -> dict:
    out = tmp / f"obvious-{n}.json"
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--obvious-worker",
            api_url,
            "--in-flight",
            str(n),
            "--seconds",
            str(seconds),
            "--out",
            str(out),
        ],
        check=True,
        timeout=seconds + 120,
    )
    data = json.loads(out.read_text())
    start, end = data["window"]
    records = [r for r in data["records"] if start <= r["published_at"] < end]
    # As for streamer, the client is every thread but the capture thread, which renders the scene.
    client_cpu_per_call_s = (data["cpu_s"] - data["capture_cpu_s"]) / len(records) if records else None
    row = figures(
        records,
        len(records),
        data["frames"],
        data["cpu_s"],
        data["rss_start_mb"],
        data["rss_end_mb"],
        statistics.mean(r["bytes"] for r in records),
        client_cpu_per_call_s,
    )
    row["capture_cpu_ms_per_frame"] = round(data["capture_cpu_s"] * 1000 / data["frames"], 2)
    row["errors"] = data["errors"]
    fresh = in_order(records)
    row["late_published"] = len(records) - len(fresh)
    row["results_per_s_in_order"] = round(per_second([r["published_at"] for r in fresh]), 2)
    return row


def in_order(records: list[dict]) -> list[dict]:
    """The results, in the order they came, that move forward: each for a frame newer than all
    before it.  The obvious client publishes the others too; streamer drops them (late_dropped)."""
    kept, newest = [], float("-inf")
    for record in records:
        if record["captured_at"] > newest:
            kept.append(record)
            newest = record["captured_at"]
    return kept


# --- (c) streamer, measured from a ZeroMQ subscriber ----------------------------------------


def run_streamer(url: str, n: int, seconds: float, tmp: Path) -> dict:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    sub = Feed(endpoint)
    with open(tmp / f"streamer-{n}.log", "wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamer",
                "run",
                "--source",
                "synthetic",
                "--model",
                "synthetic/1",
                "--api-url",
                url,
                "--headless",
                "--zmq",
                endpoint,
                "--max-in-flight",
                str(n),
                "--max-fps",
                "1000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            cwd=tmp,
            env={**os.environ, "ROBOFLOW_API_KEY": API_KEY},
        )
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
    out = figures(records, calls, frames, cpu1 - cpu0, rss0, rss1, (c1["bytes_sent"] - c0["bytes_sent"]) / calls, None)
    out["late_dropped"] = c1["late_results"] - c0["late_results"]
    out.update(thread_breakdown(c0, c1, cpu1 - cpu0, calls, frames))
    return out


def thread_cpu_s(counters: dict) -> dict[str, float]:
    """CPU seconds by thread from a heartbeat's counters: the mapping counters["cpu_s"] if
    present, else the older fields capture_cpu_s, dispatch_cpu_s ..., else nothing."""
    if isinstance(counters.get("cpu_s"), dict):
        return {name: float(value) for name, value in counters["cpu_s"].items()}
    return {name.removesuffix("_cpu_s"): float(counters[name]) for name in OLD_CPU_FIELDS if name in counters}


OLD_CPU_FIELDS = ("capture_cpu_s", "dispatch_cpu_s", "request_cpu_s", "output_cpu_s")


def thread_breakdown(c0: dict, c1: dict, process_cpu_s: float, calls: int, frames: int) -> dict:
    """The optional per-thread view of a window between two heartbeats; the headline CPU
    figures are the whole process's, from /proc, and need none of this."""
    before, after = thread_cpu_s(c0), thread_cpu_s(c1)
    threads = {name: after[name] - before[name] for name in after if name in before}
    out: dict = {}
    if "capture" in threads and calls and frames:
        # The client is every thread but the capture thread, which stands in for the camera (it
        # renders the synthetic scene): the request threads (resize, encode, base64, HTTP,
        # parse), the leading or dispatching, the output loop (publish), ZeroMQ's I/O thread...
        capture = threads.pop("capture")
        client = process_cpu_s - capture
        threads["other"] = client - sum(threads.values())
        out["client_cpu_ms_per_call"] = round(client * 1000 / calls, 2)
        out["client_cpu_ms_per_call_by_thread"] = {k: round(v * 1000 / calls, 2) for k, v in threads.items()}
        out["capture_cpu_ms_per_frame"] = round(capture * 1000 / frames, 2)
    if "steps_cpu_s" in c0 and "steps_cpu_s" in c1 and calls:
        # The request threads' CPU on the steps of the calls (resize, encode, base64, HTTP,
        # parse, publish), without their idle wake-ups: the work the client must do per call.
        out["steps_cpu_ms_per_call"] = round((c1["steps_cpu_s"] - c0["steps_cpu_s"]) * 1000 / calls, 2)
    return out


def next_heartbeat(sub: Feed) -> dict:
    """The next heartbeat to arrive (streamer sends one every 2 s)."""
    seen = len(sub.heartbeats)
    deadline = time.monotonic() + 5
    while len(sub.heartbeats) == seen and time.monotonic() < deadline:
        time.sleep(0.002)
    return sub.heartbeats[-1]


def figures(
    records: list[dict],
    calls: int,
    frames: int,
    cpu_s: float,
    rss0: float,
    rss1: float,
    bytes_per_call: float,
    client_cpu_per_call_s: float | None,
) -> dict:
    published = [r["published_at"] for r in records]
    ages = [(r["published_at"] - r["captured_at"]) * 1000 for r in records]
    gaps = [b - a for a, b in zip(published, published[1:], strict=False)]
    half = len(ages) // 2
    return {
        "results_per_s": round(per_second(published), 2),
        "age_p50_ms": round(quantile(ages, 0.5), 1),
        "age_p95_ms": round(quantile(ages, 0.95), 1),
        "age_p95_first_half_ms": round(quantile(ages[:half], 0.95), 1),
        "age_p95_second_half_ms": round(quantile(ages[half:], 0.95), 1),
        "gap_mean_ms": round(statistics.mean(gaps) * 1000, 1),
        "gap_cv": round(statistics.pstdev(gaps) / statistics.mean(gaps), 3),
        "calls": calls,
        "frames": frames,
        "process_cpu_ms_per_result": round(cpu_s * 1000 / len(records), 2) if records else None,
        "process_cpu_ms_per_call": round(cpu_s * 1000 / calls, 2),
        "process_cpu_ms_per_frame": round(cpu_s * 1000 / frames, 2),
        "client_cpu_ms_per_call": None if client_cpu_per_call_s is None else round(client_cpu_per_call_s * 1000, 2),
        "rss_start_mb": round(rss0, 1),
        "rss_end_mb": round(rss1, 1),
        "bytes_per_call": round(bytes_per_call),
    }


def per_second(times: list[float]) -> float:
    """Events a second over the span from the first to the last of ``times`` (sorted)."""
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def rss_run(url: str, minutes: float, tmp: Path) -> dict:
    with open(tmp / "rss.log", "wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamer",
                "run",
                "--source",
                "synthetic",
                "--model",
                "synthetic/1",
                "--api-url",
                url,
                "--headless",
                "--max-in-flight",
                "4",
                "--max-fps",
                "1000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            cwd=tmp,
        )
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
    return {
        "minutes": minutes,
        "rss_start_mb": round(start, 1),
        "rss_end_mb": samples[-1],
        "rss_growth_mb": round(samples[-1] - start, 1),
        "samples_mb": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per row (60)")
    parser.add_argument("--latencies", "--latency-ms", default=FULL_LATENCIES, help=f"({FULL_LATENCIES})")
    parser.add_argument("--in-flight", default=FULL_IN_FLIGHT, help=f"({FULL_IN_FLIGHT})")
    parser.add_argument("--clients", default=",".join(CLIENTS), help=f"any of {','.join(CLIENTS)} (all)")
    parser.add_argument(
        "--rss-minutes",
        type=float,
        default=None,
        help="(5 for the full sweep, 0 when --latency-ms or --in-flight picks a configuration)",
    )
    parser.add_argument("--json", help="(bench/results/throughput.json, or throughput-L<ms>-N<n>.json)")
    parser.add_argument("--sequential-worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--obvious-worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sequential_worker:
        sequential_worker(args.sequential_worker, args.seconds, args.out)
        return 0
    if args.obvious_worker:
        obvious_worker(args.obvious_worker, int(args.in_flight), args.seconds, args.out)
        return 0
    clients = args.clients.split(",")
    if unknown := set(clients) - set(CLIENTS):
        parser.error(f"--clients: expected some of {', '.join(CLIENTS)}, got {', '.join(sorted(unknown))}")
    full = (args.latencies, args.in_flight) == (FULL_LATENCIES, FULL_IN_FLIGHT)
    rss_minutes = args.rss_minutes if args.rss_minutes is not None else 5.0 if full else 0.0
    json_path = Path(
        args.json
        or ROOT
        / "bench"
        / "results"
        / (
            "throughput.json"
            if full
            else f"throughput-L{args.latencies.replace(',', '_')}-N{args.in_flight.replace(',', '_')}.json"
        )
    )
    import tempfile

    rows = []
    full_q95 = full_size_q95_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        for latency_ms in [float(x) for x in args.latencies.split(",")]:
            with ApiServer("127.0.0.1", 0, latency_ms=latency_ms, jitter=0.1, detector=False) as server:
                url = f"{server.url}/synthetic/1"

                def measured(client: str, n: int, row: dict, latency_ms: float = latency_ms) -> None:
                    rows.append({"latency_ms": latency_ms, "client": client, "in_flight": n, **row})
                    print(line(rows[-1], full_q95), flush=True)

                if "sequential" in clients:
                    measured("sequential", 1, run_sequential(url, args.seconds, tmp_path))
                for n in [int(x) for x in args.in_flight.split(",")]:
                    if "obvious" in clients:
                        measured("obvious", n, run_obvious(url, n, args.seconds, tmp_path))
                    if "streamer" in clients:
                        measured("streamer", n, run_streamer(server.url, n, args.seconds, tmp_path))
        rss = None
        if rss_minutes > 0:
            with ApiServer("127.0.0.1", 0, latency_ms=300, jitter=0.1, detector=False) as server:
                rss = rss_run(server.url, rss_minutes, tmp_path)
    report = {
        "machine": machine(),
        "seconds": args.seconds,
        "source": "synthetic 1280x720 at 30 fps",
        "full_size_q95_bytes": full_q95,
        "rows": rows,
        "comparisons": comparisons(rows),
        "rss_run": rss,
    }
    print()
    print_table(report)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {json_path}")
    return 0


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
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
    return (
        f"| {row['latency_ms']:>4.0f} | {row['client']:<10} | {row['in_flight']:>2} "
        f"| {row['results_per_s']:>6.2f} | {'-' if tgt is None else f'{tgt:.2f}':>6} "
        f"| {row['age_p50_ms']:>5.0f} | {row['age_p95_ms']:>5.0f} | {age_limit:>5.0f} "
        f"| {row['age_p95_first_half_ms']:>4.0f}/{row['age_p95_second_half_ms']:<4.0f} "
        f"| {row['gap_mean_ms']:>5.0f} | {row['gap_cv']:>5.2f} "
        f"| {'-' if cpu is None else f'{cpu:.2f}':>5} | {'-' if steps is None else f'{steps:.2f}':>5} "
        f"| {row['process_cpu_ms_per_call']:>6.2f} | {_num(row['process_cpu_ms_per_result']):>6} "
        f"| {row['process_cpu_ms_per_frame']:>5.2f} "
        f"| {row['rss_start_mb']:>5.0f} -> {row['rss_end_mb']:<5.0f} "
        f"| {row['bytes_per_call']:>6} ({row['bytes_per_call'] / full_q95:.2f}) |"
    )


HEADER = (
    "| L ms | client     |  N | res/s  | target |  p50  |  p95  | limit | p95 1st/2nd half "
    "| gap ms |  CV  | cli ms/call | steps ms/call | proc ms/call | proc ms/result | proc ms/frame "
    "| RSS MB | bytes/call (of q95) |"
)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def comparisons(rows: list[dict]) -> list[dict]:
    """For each streamer row, how it stands against the obvious client's row of the same
    latency and N, if that was measured."""
    obvious = {(r["latency_ms"], r["in_flight"]): r for r in rows if r["client"] == "obvious"}
    return [
        {
            "latency_ms": r["latency_ms"],
            "in_flight": r["in_flight"],
            **compare(obvious[(r["latency_ms"], r["in_flight"])], r),
        }
        for r in rows
        if r["client"] == "streamer" and (r["latency_ms"], r["in_flight"]) in obvious
    ]


def compare(obvious: dict, streamer: dict) -> dict:
    """Issue 12's targets: streamer's results/s at least 1.1 times the obvious client's, its
    result age p95 at most 30 ms above, its process CPU per result no higher."""

    def ratio(obvious_rate: float | None) -> float | None:
        if obvious_rate is None:
            return None
        return round(streamer["results_per_s"] / obvious_rate, 3) if obvious_rate else float("inf")

    rate_ratio = ratio(obvious["results_per_s"])
    age_diff = streamer["age_p95_ms"] - obvious["age_p95_ms"]
    cpu = (obvious["process_cpu_ms_per_result"], streamer["process_cpu_ms_per_result"])
    return {
        "results_per_s": [obvious["results_per_s"], streamer["results_per_s"]],
        "results_per_s_ratio": rate_ratio,
        "results_per_s_met": rate_ratio >= 1.1,
        # Against only the obvious client's results that move forward, which is what streamer
        # publishes: not the target, but where the two differ.
        "results_per_s_in_order_ratio": ratio(obvious.get("results_per_s_in_order")),
        "age_p95_ms": [obvious["age_p95_ms"], streamer["age_p95_ms"]],
        "age_p95_diff_ms": round(age_diff, 1),
        "age_p95_met": age_diff <= 30,
        "age_p50_ms": [obvious["age_p50_ms"], streamer["age_p50_ms"]],
        "cpu_ms_per_result": list(cpu),
        "cpu_per_result_met": None not in cpu and cpu[1] <= cpu[0],
        "late": [obvious.get("late_published"), streamer.get("late_dropped")],
    }


COMPARISON_HEADER = (
    "| L ms |  N | results/s: obvious -> streamer (x >= 1.1) "
    "| age p50, p95 ms: obvious -> streamer (p95 +<= 30) | process CPU ms/result (<=) "
    "| late results: obvious published, streamer dropped |"
)


def comparison_line(c: dict) -> str:
    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    (r0, r1), (a0, a1), (p0, p1), (c0, c1) = (
        c["results_per_s"],
        c["age_p50_ms"],
        c["age_p95_ms"],
        c["cpu_ms_per_result"],
    )
    in_order = c.get("results_per_s_in_order_ratio")
    in_order = "" if in_order is None else f"; x{in_order:.2f} of its in-order results"
    return (
        f"| {c['latency_ms']:>4.0f} | {c['in_flight']:>2} "
        f"| {r0:.2f} -> {r1:.2f} (x{c['results_per_s_ratio']:.2f}, {met(c['results_per_s_met'])}"
        f"{in_order}) "
        f"| {a0:.0f}, {p0:.0f} -> {a1:.0f}, {p1:.0f} ({c['age_p95_diff_ms']:+.0f}, {met(c['age_p95_met'])}) "
        f"| {_num(c0)} -> {_num(c1)} ({met(c['cpu_per_result_met'])}) "
        f"| {c['late'][0]}, {c['late'][1]} |"
    )


def print_table(report: dict) -> None:
    print(
        f"machine: {report['machine']}; source {report['source']}; {report['seconds']:.0f} s each; "
        f"a full-size quality-95 JPEG of the frame is {report['full_size_q95_bytes']} bytes (base64)"
    )
    print(HEADER)
    print("|" + "---|" * 18)
    for row in report["rows"]:
        print(line(row, report["full_size_q95_bytes"]))
    if report["comparisons"]:
        print()
        print("streamer against the obvious client, the targets of issue 12 (set there at N 8, L 300 ms):")
        print(COMPARISON_HEADER)
        print("|" + "---|" * 6)
        for c in report["comparisons"]:
            print(comparison_line(c))
    rss = report["rss_run"]
    if rss:
        print(
            f"RSS over a {rss['minutes']:g}-minute run (N 4, 300 ms): {rss['rss_start_mb']} MB -> "
            f"{rss['rss_end_mb']} MB ({rss['rss_growth_mb']:+} MB)"
        )


if __name__ == "__main__":
    sys.exit(main())
