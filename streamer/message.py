"""The messages streamer sends: one result as JSON, and the status heartbeat.

See docs/messages.md for the format.  The publisher encodes each message once; every output
(ZeroMQ, JSONL, MQTT, the web page) sends those bytes.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from streamer.names import source_name
from streamer.stats import Snapshot
from streamer.types import Result

MESSAGE_TYPE = "detections"
STATUS_TYPE = "status"


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null, so every consumer can parse the line."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def result_message(result: Result, published_at: float | None = None, name: str | None = None) -> dict[str, Any]:
    """The message for one result; boxes are centre xywh in original-frame pixels.
    ``name``: the camera's name (default: made from the source).

    Other top-level fields the API sent (e.g. a classifier's ``top`` and ``confidence``)
    are passed on too, unless they would clash with one of ours."""
    message = {
        "type": MESSAGE_TYPE,
        "source": result.source,
        "name": source_name(result.source) if name is None else name,
        "frame_id": result.frame_id,
        "captured_at": round(result.captured_at, 6),
        "sent_at": round(result.sent_at, 6),
        "received_at": round(result.received_at, 6),
        "published_at": round(time.time() if published_at is None else published_at, 6),
        "image": {"width": result.width, "height": result.height},
        "model": result.model,
        "inference_id": result.inference_id,
        "server_time": result.server_time_s,
        "reused": result.reused,
        "predictions": result.predictions(),
    }
    return message | {key: value for key, value in result.extra.items() if key not in message}


def encode_message(message: dict[str, Any]) -> bytes:
    """Compact JSON that every consumer can parse: a NaN or infinity becomes null.  Those are
    rare, so the copy that replaces them is made only when the plain encoding refuses one."""
    try:
        text = json.dumps(message, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(_clean(message), separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


def status_message(
    source: str, state: str, snapshot: Snapshot, now_wall: float | None = None, name: str | None = None
) -> dict[str, Any]:
    """A heartbeat: what streamer is doing, so that silence on the detections topic can be
    told apart from "nothing detected" (results keep coming, empty) and from "dead"
    (no heartbeat)."""

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    s = snapshot
    counters = {
        **s.counters,
        "jsonl_dropped": s.outputs_dropped.get("jsonl", 0),
        "mqtt_dropped": s.outputs_dropped.get("mqtt", 0),
        "cpu_s": dict(s.cpu_s),
        "api_failures": dict(s.api_failures),
    }
    return {
        "type": STATUS_TYPE,
        "source": source,
        "name": source_name(source) if name is None else name,
        "time": round(time.time() if now_wall is None else now_wall, 6),
        "state": state,
        "uptime_s": round(s.uptime_s, 3),
        "source_state": s.source_state,
        "api_state": s.api_state,
        "api_down_s": rounded(s.api_down_s),
        "last_frame_age_s": rounded(s.last_frame_age_s),
        "last_result_age_s": rounded(s.last_result_age_s),
        "last_result_frame_id": s.last_result_frame_id,
        "capture_fps": round(s.capture_fps, 2),
        "sent_per_s": round(s.send_per_s, 2),
        "inference_fps": round(s.inference_fps, 2),
        "counters": counters,
    }
