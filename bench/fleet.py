"""A fleet on one broker: 4 `streamer run` processes (synthetic sources, --name cam1..cam4)
and one stand-in API (in this process, fixed answers) publish into one mosquitto at QoS 1;
one subscriber takes `streamer/+/detections` (and `+/status`, for each streamer's own
counters).  After --seconds (60) past a 5 s warm-up, each streamer is stopped with SIGTERM.

Reported per camera: results a second as received at the broker's subscriber, the
end-to-end age at receipt (receive time - captured_at: capture, API, publish and broker;
and receive time - published_at: the MQTT hop alone), p50 and p95, and loss at QoS 1: the
detections the streamer says it published to MQTT (counters.published - mqtt_dropped in
its last heartbeat) against those received, and frame_id order.

    .venv/bin/python bench/fleet.py [--cameras 4] [--seconds 60] [--max-fps 5] [--json bench/results/fleet.json]

Needs mosquitto and mosquitto_passwd (scripts/install-system-deps.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from streamer.standin.server import ApiServer  # noqa: E402
from support.mosquitto import PASSWORD, Broker, Recorder  # noqa: E402

WARMUP_S = 5.0
CONFIG = """\
synthetic:
  width: 640
  height: 360
  fps: 15
mqtt:
  qos: 1
  snapshot_s: 0
"""


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def start_fleet(cameras: int, api_url: str, broker: Broker, folder: Path, max_fps: float) -> list:
    config = folder / "fleet.yaml"
    config.write_text(CONFIG)
    env = dict(os.environ, STREAMER_MQTT_PASSWORD=PASSWORD, PYTHONUNBUFFERED="1")
    env.pop("DISPLAY", None)
    procs = []
    for i in range(1, cameras + 1):
        args = ["run", "-c", str(config), "--source", "synthetic", "--api-url", api_url, "--model", "synthetic/1"]
        args += ["--headless", "--max-fps", str(max_fps), "--mqtt", broker.url, "--name", f"cam{i}"]
        log = open(folder / f"cam{i}.log", "wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "streamer", *args], stderr=log, stdout=log, env=env))
        log.close()
    return procs


def summarise(sub: Recorder, window: tuple[float, float], cameras: int) -> dict:
    received: dict[str, list] = defaultdict(list)
    last_status: dict[str, dict] = {}
    for m in sub.messages:
        _, name, kind = m.topic.split("/", 2)
        body = json.loads(m.payload)
        if kind == "detections":
            received[name].append((m.at, body))
        elif kind == "status":
            last_status[name] = body
    report = {}
    for i in range(1, cameras + 1):
        name = f"cam{i}"
        inside = [(at, b) for at, b in received[name] if window[0] <= at <= window[1]]
        counters = last_status.get(name, {}).get("counters", {})
        sent = counters.get("published", 0) - counters.get("mqtt_dropped", 0)
        ids = [b["frame_id"] for _, b in received[name]]
        report[name] = {
            "results_per_s": round(len(inside) / (window[1] - window[0]), 2),
            "age_ms_p50": round(quantile([(at - b["captured_at"]) * 1000 for at, b in inside], 0.5), 1),
            "age_ms_p95": round(quantile([(at - b["captured_at"]) * 1000 for at, b in inside], 0.95), 1),
            "mqtt_hop_ms_p95": round(quantile([(at - b["published_at"]) * 1000 for at, b in inside], 0.95), 1),
            "published_to_mqtt": sent,
            "received": len(received[name]),
            "lost": sent - len(received[name]),
            "out_of_order": sum(1 for a, b in zip(ids, ids[1:], strict=False) if b <= a),
            "final_state": last_status.get(name, {}).get("state"),
        }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-fps", type=float, default=5.0, help="API calls a second per camera")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = Broker(folder).start()
        try:
            with (
                ApiServer("127.0.0.1", 0, detector=False) as api,
                Recorder(broker, ["streamer/+/detections", "streamer/+/status"], qos=1) as sub,
            ):
                procs = start_fleet(args.cameras, api.url, broker, folder, args.max_fps)
                started = time.time()
                time.sleep(WARMUP_S + args.seconds)
                window = (started + WARMUP_S, time.time())
                for proc in procs:
                    proc.send_signal(signal.SIGTERM)
                codes = [proc.wait(15) for proc in procs]
                time.sleep(1.0)  # the last heartbeats and detections through the broker
                report = summarise(sub, window, args.cameras)
        finally:
            broker.stop()
    print(f"{args.cameras} streamers x {args.max_fps:g} calls/s, QoS 1, {args.seconds:g} s; exit codes {codes}")
    print("| camera | results/s at broker | age p50 ms | age p95 ms | MQTT hop p95 ms | published | received | lost |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in report.items():
        print(
            f"| {name} | {r['results_per_s']:.2f} | {r['age_ms_p50']:.0f} | {r['age_ms_p95']:.0f} | "
            f"{r['mqtt_hop_ms_p95']:.1f} | {r['published_to_mqtt']} | {r['received']} | {r['lost']} |"
        )
    if args.json:
        meta = {"cameras": args.cameras, "seconds": args.seconds, "max_fps": args.max_fps, "exit_codes": codes}
        meta["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
        args.json.write_text(json.dumps({"meta": meta, "cameras": report}, indent=2) + "\n")
    return 0 if all(code == 0 for code in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
