"""Home Assistant MQTT discovery: the retained config messages that make one device per
streamer, with its entities tied to the availability topics.  Pure functions.

Topics are ``<discovery_prefix>/<component>/streamer_<name>/<object_id>/config``; Home
Assistant wants node and object ids of [a-zA-Z0-9_-], which the camera name and class
slugs already are (``streamer.names``).

A class entity is available only while streamer, the source and the API all are
(``availability_mode: all`` over three topics), so that during a camera or API outage it
reads *unavailable* rather than the last thing seen.  The health entities (the source's and
the API's connectivity, result age, inference fps) are diagnostic entities.
"""

from __future__ import annotations

from typing import Any

from streamer import __version__

ONLINE, OFFLINE = "online", "offline"
LINKS = ("source", "api")  # <prefix>/source and <prefix>/api: online while it works
CLASS_OBJECTS = (("binary_sensor", "_detected"), ("sensor", "_count"))  # a class's object ids: <slug><suffix>


def node_id(name: str) -> str:
    return f"streamer_{name}"


def config_filter(name: str, discovery_prefix: str) -> str:
    """The subscription matching every discovery config of this streamer's device."""
    return f"{discovery_prefix}/+/{node_id(name)}/+/config"


def device(name: str) -> dict[str, Any]:
    return {
        "identifiers": [node_id(name)],
        "name": f"streamer {name}",
        "manufacturer": "streamer",
        "model": "streamer",
        "sw_version": __version__,
    }


def _entity(name: str, prefix: str, object_id: str, title: str, links: bool = False, **fields: Any) -> dict[str, Any]:
    """An entity of the device, with ``fields`` after the common keys; ``links``: available
    only while the source and the API work too."""
    topics = [f"{prefix}/availability"] + ([f"{prefix}/{link}" for link in LINKS] if links else [])
    entity: dict[str, Any] = {
        "name": title,
        "unique_id": f"{node_id(name)}_{object_id}",
        "availability": [{"topic": t, "payload_available": ONLINE, "payload_not_available": OFFLINE} for t in topics],
        "device": device(name),
    }
    if links:
        entity["availability_mode"] = "all"
    entity.update(fields)
    return entity


def class_configs(name: str, prefix: str, discovery_prefix: str, slug: str) -> list[tuple[str, dict[str, Any]]]:
    """A binary sensor ("<class> detected") and a count sensor for one class slug.

    The off delay is applied by streamer (mqtt.off_delay_s) before it publishes OFF, not by
    Home Assistant's ``off_delay``: that one would turn the sensor off while the class is
    still in view, since the state is published only when it changes."""
    node = f"{discovery_prefix}/%s/{node_id(name)}"
    detected = _entity(
        name,
        prefix,
        f"{slug}_detected",
        f"{slug} detected",
        links=True,
        state_topic=f"{prefix}/{slug}/detected",
        payload_on="ON",
        payload_off="OFF",
        device_class="occupancy",
    )
    count = _entity(
        name,
        prefix,
        f"{slug}_count",
        f"{slug} count",
        links=True,
        state_topic=f"{prefix}/{slug}/count",
        state_class="measurement",
        unit_of_measurement="objects",
    )
    return [
        (f"{node % 'binary_sensor'}/{slug}_detected/config", detected),
        (f"{node % 'sensor'}/{slug}_count/config", count),
    ]


def class_of_config(topic: str, name: str, discovery_prefix: str) -> str | None:
    """The class slug a discovery config topic of this device is for (None: not a class's)."""
    head = discovery_prefix + "/"
    parts = topic[len(head) :].split("/") if topic.startswith(head) else []
    if len(parts) != 4 or parts[1] != node_id(name) or parts[3] != "config":
        return None
    component, object_id = parts[0], parts[2]
    for kind, suffix in CLASS_OBJECTS:
        if component == kind and object_id.endswith(suffix) and len(object_id) > len(suffix):
            return object_id[: -len(suffix)]
    return None


def _diagnostic(
    name: str, prefix: str, object_id: str, title: str, field: str, unit: str, **extra: Any
) -> dict[str, Any]:
    """A diagnostic sensor showing one field of ``<prefix>/diagnostics`` (``extra`` keys last)."""
    return _entity(
        name,
        prefix,
        object_id,
        title,
        state_topic=f"{prefix}/diagnostics",
        value_template="{{ value_json." + field + " }}",
        unit_of_measurement=unit,
        state_class="measurement",
        entity_category="diagnostic",
        **extra,
    )


def _connectivity(name: str, prefix: str, link: str) -> dict[str, Any]:
    """A diagnostic binary sensor: ON while the source (or the API) works."""
    return _entity(
        name,
        prefix,
        f"{link}_connected",
        "source" if link == "source" else "API",
        state_topic=f"{prefix}/{link}",
        payload_on=ONLINE,
        payload_off=OFFLINE,
        device_class="connectivity",
        entity_category="diagnostic",
    )


def device_configs(
    name: str, prefix: str, discovery_prefix: str, snapshot: bool, event_snapshot: bool = False
) -> list[tuple[str, dict[str, Any]]]:
    """The device's own entities: the source's and the API's connectivity, result age and
    inference fps (diagnostic), and the cameras (the periodic and the event snapshot)."""
    node = f"{discovery_prefix}/%s/{node_id(name)}"
    age = _diagnostic(name, prefix, "result_age", "result age", "last_result_age_s", "s", device_class="duration")
    fps = _diagnostic(name, prefix, "inference_fps", "inference fps", "inference_fps", "fps")
    configs = [
        (f"{node % 'binary_sensor'}/{link}_connected/config", _connectivity(name, prefix, link)) for link in LINKS
    ]
    configs += [(f"{node % 'sensor'}/result_age/config", age), (f"{node % 'sensor'}/inference_fps/config", fps)]
    for wanted, object_id, title in (
        (snapshot, "snapshot", "snapshot"),
        (event_snapshot, "event_snapshot", "event snapshot"),
    ):
        if wanted:  # a camera showing the JPEG on <prefix>/<object_id>
            camera = _entity(name, prefix, object_id, title, topic=f"{prefix}/{object_id}")
            configs.append((f"{node % 'camera'}/{object_id}/config", camera))
    return configs
