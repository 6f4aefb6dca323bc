"""Journal volume: log lines an hour from `streamer run` with the camera down half the time.

A real GStreamer RTSP server (tests/support) is the camera; it is killed and started again
in halves (by default 5 minutes up, 5 minutes down); a stand-in API in this process answers.
streamer's stderr goes to a file (not a terminal, as under systemd) and its lines are
counted by kind, from the first camera cycle to just before the stop.

Scaled down: every time constant that decides how many lines are written is divided by
--scale: the halves (300 s / scale), the status interval (60 s / scale) and FaultLog's first
report and quiet time (10 s and 30 s / scale, patched in the streamer process).  Retry rates
(open and read timeouts, backoff) are not scaled: retries are counted, never logged one by
one, so they do not change the count.  Lines an hour = lines counted x 3600 / (seconds run
x scale).

    .venv/bin/python bench/journal.py [--scale 10] [--cycles 4] [--json bench/results/journal.json]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from streamer.standin.server import ApiServer  # noqa: E402
from support.rtsp import RtspServer  # noqa: E402

# The streamer process, with FaultLog's time constants divided by the scale (argv[1]).
SCALED_MAIN = (
    "import sys; from streamer.retry import FaultLog; k = float(sys.argv.pop(1)); "
    "FaultLog.FIRST_REPORT_S /= k; FaultLog.QUIET_S /= k; "
    "from streamer.commands.cli import main; sys.exit(main(sys.argv[1:]))"
)
KINDS = [  # (kind, pattern), first match wins
    ("status", re.compile(r"\| newest result ")),
    ("latency", re.compile(r" latency: ")),
    ("source outage", re.compile(r"streamer\.sources\.capture: source .*: (?!.*recovered)")),
    ("source recovered", re.compile(r"recovered after")),
    ("source open", re.compile(r"source .* open")),
]


def classify(lines: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in lines:
        kind = next((k for k, pattern in KINDS if pattern.search(line)), "other")
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def run(scale: float, cycles: int, tmp: Path) -> dict:
    half_s = 300.0 / scale
    config = tmp / "journal.yaml"
    config.write_text(f"output:\n  status_interval_s: {60.0 / scale:g}\n")
    err_path = tmp / "streamer.err"
    with RtspServer(live=True) as camera, ApiServer("127.0.0.1", 0) as api, open(err_path, "wb") as err:
        args = ["run", "-c", str(config), "--source", camera.url, "--model", "synthetic/1"]
        args += ["--api-url", api.url, "--headless"]
        proc = subprocess.Popen([sys.executable, "-c", SCALED_MAIN, str(scale), *args], stderr=err, cwd=tmp)
        try:
            time.sleep(5)  # started and reading
            start_at, started = err_path.stat().st_size, time.monotonic()
            for _ in range(cycles):
                time.sleep(half_s)
                camera.kill()
                time.sleep(half_s)
                camera.start()
            elapsed = time.monotonic() - started
            end_at = err_path.stat().st_size
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(15)
    text = err_path.read_bytes()
    lines = text[start_at:end_at].decode(errors="replace").splitlines()
    per_hour = len(lines) * 3600 / (elapsed * scale)
    stop = next((x for x in text.decode(errors="replace").splitlines() if "stopped:" in x), "")
    return {
        "scale": scale,
        "cycles": cycles,
        "half_s_scaled": half_s,
        "seconds_run": round(elapsed, 1),
        "represents_s": round(elapsed * scale),
        "lines": len(lines),
        "lines_by_kind": classify(lines),
        "lines_per_hour": round(per_hour),
        "lines_per_day": round(per_hour * 24),
        "stop_line": stop.split(": ", 1)[-1],
        "exit_code": code,
        "sample": lines[:12],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument("--cycles", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.scale, args.cycles, Path(tmp))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
