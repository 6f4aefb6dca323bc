"""What the commands share: logging set-up, the common options, and the config they build."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from streamer.config import Config, load
from streamer.redact import RedactingFilter, register_secret

log = logging.getLogger("streamer")

DEFAULT_CONFIG = "config.yaml"


def setup_logging(level: str = "info") -> None:
    root = logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler.addFilter(RedactingFilter())  # on the handler, so records from every logger pass it
        root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request (with its query string) at INFO: keep it to warnings.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "debug" else logging.DEBUG)


def api_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("detection API")
    g.add_argument("-c", "--config", metavar="FILE", help=f"config file (default: ./{DEFAULT_CONFIG} if it exists)")
    g.add_argument("--model", metavar="PROJECT/VERSION", help="model id, e.g. hard-hat-sample/2")
    g.add_argument("--api-url", metavar="URL", help="API base URL (default https://detect.roboflow.com)")
    g.add_argument(
        "--api-key", metavar="KEY", help="API key; prefer $ROBOFLOW_API_KEY: a flag is visible to every user in ps"
    )
    g.add_argument("--confidence", type=float, metavar="0-1", help="minimum confidence (default 0.4)")
    g.add_argument("--overlap", type=float, metavar="0-1", help="NMS overlap threshold (default 0.3)")
    g.add_argument("--classes", metavar="A,B", help="keep only these classes (comma separated)")
    g.add_argument("--max-side", type=int, metavar="PX", help="longest side of the upload (default 640)")


def log_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))


OVERRIDES = {  # argparse dest -> config key path
    "source": "source.uri",
    "model": "api.model",
    "api_url": "api.url",
    "api_key": "api.api_key",
    "confidence": "inference.confidence",
    "overlap": "inference.overlap",
    "classes": "inference.classes",
    "max_side": "inference.max_side",
    "headless": "output.headless",
    "duration": "duration_s",
    "zmq": "output.zmq",
    "jsonl": "output.jsonl",
    "record": "output.record",
    "log_level": "log_level",
    "max_in_flight": "inference.max_in_flight",
    "max_fps": "inference.max_fps",
    "min_change": "inference.min_change",
    "mqtt": "mqtt.url",
    "name": "name",
    "http": "output.http",
}


def config_from_args(args: argparse.Namespace, extra: dict | None = None, use_file: bool = True) -> Config:
    path = getattr(args, "config", None)
    if path is None and use_file and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    if getattr(args, "api_key", None):
        register_secret(args.api_key)
        log.warning("--api-key is visible to other users in ps; prefer $ROBOFLOW_API_KEY or api.api_key_file")
    overrides = {key: getattr(args, dest) for dest, key in OVERRIDES.items() if getattr(args, dest, None) is not None}
    overrides.update(extra or {})
    config = load(path, overrides, need_model=True)
    setup_logging(config.log_level)
    if path:
        log.debug("configuration from %s", path)
    return config
