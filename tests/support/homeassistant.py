"""What Home Assistant's MQTT discovery requires of a config payload, for the tests to check
streamer's against."""

from __future__ import annotations

from typing import Any

# The keys Home Assistant's MQTT integration documents as required, per component, plus
# what device-based discovery needs (a unique_id, and a device with identifiers).
REQUIRED = {
    "binary_sensor": ("state_topic",),
    "sensor": ("state_topic",),
    "camera": ("topic",),
}
DISCOVERY_REQUIRED = ("unique_id", "device")


def missing_keys(component: str, payload: dict[str, Any]) -> list[str]:
    """The documented required keys a discovery payload lacks (empty: it is complete)."""
    keys = [*REQUIRED[component], *DISCOVERY_REQUIRED]
    missing = [key for key in keys if not payload.get(key)]
    if payload.get("device") and not payload["device"].get("identifiers"):
        missing.append("device.identifiers")
    return missing
