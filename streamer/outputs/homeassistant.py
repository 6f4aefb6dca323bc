"""Home Assistant MQTT discovery: the retained config messages that make one device per
streamer, with its entities tied to the availability topic.  Pure functions.

Topics are ``<discovery_prefix>/<component>/streamer_<name>/<object_id>/config``; Home
Assistant wants node and object ids of [a-zA-Z0-9_-], which the camera name and class
slugs already are (``streamer.names``).
"""

from __future__ import annotations

from typing import Any

from streamer import __version__

# The keys Home Assistant's MQTT integration documents as required, per component, plus
# what device-based discovery needs (a unique_id, and a device with identifiers).
REQUIRED = {
    "binary_sensor": ("state_topic",),
    "sensor": ("state_topic",),
    "camera": ("topic",),
}
DISCOVERY_REQUIRED = ("unique_id", "device")


def node_id(name: str) -> str:
    return f"streamer_{name}"


def device(name: str) -> dict[str, Any]:
    return {
        "identifiers": [node_id(name)],
        "name": f"streamer {name}",
        "manufacturer": "streamer",
        "model": "streamer",
        "sw_version": __version__,
    }


def _entity(name: str, prefix: str, object_id: str, title: str) -> dict[str, Any]:
    return {
        "name": title,
        "unique_id": f"{node_id(name)}_{object_id}",
        "availability_topic": f"{prefix}/availability",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device(name),
    }


def class_configs(name: str, prefix: str, discovery_prefix: str, slug: str) -> list[tuple[str, dict[str, Any]]]:
    """A binary sensor ("<class> detected") and a count sensor for one class slug.

    The off delay is applied by streamer (mqtt.off_delay_s) before it publishes OFF, not by
    Home Assistant's ``off_delay``: that one would turn the sensor off while the class is
    still in view, since the state is published only when it changes."""
    node = f"{discovery_prefix}/%s/{node_id(name)}"
    detected = _entity(name, prefix, f"{slug}_detected", f"{slug} detected")
    detected.update(state_topic=f"{prefix}/{slug}/detected", payload_on="ON", payload_off="OFF")
    detected["device_class"] = "occupancy"
    count = _entity(name, prefix, f"{slug}_count", f"{slug} count")
    count.update(state_topic=f"{prefix}/{slug}/count", state_class="measurement", unit_of_measurement="objects")
    return [
        (f"{node % 'binary_sensor'}/{slug}_detected/config", detected),
        (f"{node % 'sensor'}/{slug}_count/config", count),
    ]


def _status_sensor(name: str, prefix: str, object_id: str, title: str, field: str, unit: str) -> dict[str, Any]:
    """A sensor showing one field of the heartbeat."""
    sensor = _entity(name, prefix, object_id, title)
    sensor.update(
        state_topic=f"{prefix}/status",
        value_template="{{ value_json." + field + " }}",
        unit_of_measurement=unit,
        state_class="measurement",
    )
    return sensor


def device_configs(name: str, prefix: str, discovery_prefix: str, snapshot: bool) -> list[tuple[str, dict[str, Any]]]:
    """The sensors read from the heartbeat (result age, inference fps), and the camera."""
    node = f"{discovery_prefix}/%s/{node_id(name)}"
    age = _status_sensor(name, prefix, "result_age", "result age", "last_result_age_s", "s")
    age["device_class"] = "duration"
    fps = _status_sensor(name, prefix, "inference_fps", "inference fps", "inference_fps", "fps")
    configs = [(f"{node % 'sensor'}/result_age/config", age), (f"{node % 'sensor'}/inference_fps/config", fps)]
    if snapshot:
        camera = _entity(name, prefix, "snapshot", "snapshot")
        camera["topic"] = f"{prefix}/snapshot"
        configs.append((f"{node % 'camera'}/snapshot/config", camera))
    return configs


def missing_keys(component: str, payload: dict[str, Any]) -> list[str]:
    """The documented required keys a discovery payload lacks (empty: it is complete)."""
    keys = [*REQUIRED[component], *DISCOVERY_REQUIRED]
    missing = [key for key in keys if not payload.get(key)]
    if payload.get("device") and not payload["device"].get("identifiers"):
        missing.append("device.identifiers")
    return missing
