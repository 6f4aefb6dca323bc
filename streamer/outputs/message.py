"""The messages streamer sends: one result as JSON, and the status heartbeat.

See docs/messages.md for the format.  Every output (ZeroMQ, JSONL) sends these bytes.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from streamer.live.frames import Result
from streamer.live.stats import Stats
from streamer.names import source_name

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
        "predictions": result.predictions,
    }
    for key, value in result.extra.items():
        message.setdefault(key, value)
    return message


def encode_message(message: dict[str, Any]) -> bytes:
    """Compact JSON that every consumer can parse: a NaN or infinity becomes null.  Those are
    rare, so the copy that replaces them is made only when the plain encoding refuses one."""
    try:
        text = json.dumps(message, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(_clean(message), separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8")


def status_message(
    source: str,
    state: str,
    stats: Stats,
    dropped: int,
    now_mono: float,
    last_result: Result | None,
    now_wall: float | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """A heartbeat: what streamer is doing, so that silence on the detections topic can be
    told apart from "nothing detected" (results keep coming, empty) and from "dead"
    (no heartbeat)."""

    def age_s(mono: float | None) -> float | None:
        return None if mono is None else round(now_mono - mono, 3)

    return {
        "type": STATUS_TYPE,
        "source": source,
        "name": source_name(source) if name is None else name,
        "time": round(time.time() if now_wall is None else now_wall, 6),
        "state": state,
        "uptime_s": round(now_mono - stats.started_mono, 3),
        "source_state": stats.source_state,
        "api_state": stats.api_state,
        "api_down_s": age_s(stats.api_down_since),
        "last_frame_age_s": age_s(stats.last_frame_mono),
        "last_result_age_s": age_s(last_result.captured_mono if last_result else None),
        "last_result_frame_id": last_result.frame_id if last_result else None,
        "capture_fps": round(stats.capture_rate.rate(now_mono), 2),
        "inference_fps": round(stats.inference_rate.rate(now_mono), 2),
        "counters": stats.snapshot(dropped),
    }
