"""The pure parts of the MQTT output: names and class slugs, the per-class state, the Home
Assistant discovery payloads, and the mqtt config keys."""

from __future__ import annotations

import re

import pytest

from streamer.config import Config, ConfigError, load
from streamer.names import class_slug, source_name
from streamer.outputs import homeassistant as ha
from streamer.outputs.class_topics import ClassTopics

SAFE = re.compile(r"^[a-z0-9_-]{1,64}$")
HOSTILE = ["a/b", "+", "#", "x\0y", "c" * 1000, "人", "", "  ", "$SYS", "person/#/+", "../..", "Hard Hat"]


@pytest.mark.parametrize("name", HOSTILE)
def test_every_class_name_becomes_one_safe_topic_level(name):
    slug = class_slug(name)
    assert SAFE.match(slug), (name[:20], slug)
    assert class_slug(name) == slug  # stable: the same class keeps its topic


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("synthetic", "synthetic"),
        ("0", "video0"),
        ("/dev/video2", "video2"),
        (
            "rtsp://admin:hunter22@192.168.1.10:554/Streaming/Channels/101?token=abc",
            "192-168-1-10-streaming-channels-101",
        ),
        ("rtsp://user:***@cam.local/live", "cam-local-live"),  # as the pipeline shows a source
        ("/data/Front Door.MP4", "front-door"),
        ("clip.mp4", "clip"),
        ("udp://@:1234", "camera"),
        # gst: pipelines are named by their location or device, else their first element.
        (
            "gst:rtspsrc location=rtsp://viewer:Canary-Pw@cam.local:8554/front latency=0 ! decodebin ! appsink",
            "cam-local-front",
        ),
        ("gst:rtspsrc location='rtsp://cam.local/a b' ! decodebin ! appsink", "cam-local-a-b"),
        ("gst:v4l2src device=/dev/video1 ! image/jpeg,width=1920 ! jpegdec ! appsink", "video1"),
        ("gst:filesrc location=/data/yard.mp4 ! decodebin ! appsink", "yard"),
        ("gst:libcamerasrc ! video/x-raw,width=1280 ! videoconvert ! appsink", "libcamerasrc"),
        ("gst:nvarguscamerasrc sensor-id=0 ! nvvidconv ! appsink", "nvarguscamerasrc"),
        ("gst:", "camera"),
        ("gst:! appsink", "camera"),
        ("gst:rtspsrc location=rtsp://[cam/x ! decodebin ! appsink", "camera"),
        ("gst:souphttpsrc location=admin:Secret99@cam.local ! jpegdec ! appsink", "cam"),
        ("rtsp:/admin:Secret99@cam.local", "cam"),
        ('gst:uridecodebin uri="rtsp://u:pw with space@cam.local/x" ! appsink', "cam-local-x"),
        # a sink's location later in the pipeline does not name the camera
        ("gst:libcamerasrc ! tee name=t ! filesink location=/rec/clip.mp4 t. ! appsink", "libcamerasrc"),
    ],
)
def test_default_camera_name_is_a_slug_of_the_source_without_credentials(uri, expected):
    assert source_name(uri) == expected


def test_class_topics_are_capped_at_the_first_n_seen():
    topics = ClassTopics(max_classes=2, off_delay_s=5)
    added, changes = topics.update(["a", "a", "b", "c"], now=0)
    assert added == ["a", "b"] and topics.slugs == ["a", "b"]
    assert ("a/count", "2") in changes and ("b/detected", "ON") in changes
    assert not any(topic.startswith("c/") for topic, _ in changes)
    added, _ = topics.update([f"x{i}" for i in range(1000)], now=1)
    assert added == [] and topics.slugs == ["a", "b"] and topics.ignored_count == 1001


def test_configured_classes_are_exactly_the_topics():
    topics = ClassTopics(["person", "car"], max_classes=20)
    assert topics.slugs == ["person", "car"]
    assert topics.retained() == [
        ("person/count", "0"),
        ("person/detected", "OFF"),
        ("car/count", "0"),
        ("car/detected", "OFF"),
    ]
    added, changes = topics.update(["dog", "person"], now=0)
    assert added == [] and changes == [("person/count", "1"), ("person/detected", "ON")]


def test_detected_turns_off_only_after_the_off_delay_and_counts_only_on_change():
    topics = ClassTopics(["person"], off_delay_s=5)
    assert topics.update(["person"], now=10)[1] == [("person/count", "1"), ("person/detected", "ON")]
    assert topics.update(["person"], now=11)[1] == []  # nothing changed: nothing sent
    assert topics.update([], now=12)[1] == [("person/count", "0")]  # gone, but within the delay
    assert topics.tick(now=15.9) == []
    assert topics.tick(now=16.1) == [("person/detected", "OFF")]
    assert topics.tick(now=17) == []


def test_a_result_without_classes_gives_no_counts():
    assert ClassTopics().update([], now=0) == ([], [])


def _all_configs(snapshot=True):
    configs = ha.device_configs("front-door", "streamer/front-door", "homeassistant", snapshot)
    for name in HOSTILE:
        configs += ha.class_configs("front-door", "streamer/front-door", "homeassistant", class_slug(name))
    return configs


def test_discovery_payloads_have_the_keys_home_assistant_requires():
    """binary_sensor and sensor need state_topic, camera needs topic (Home Assistant's MQTT
    docs); device-based discovery needs a unique_id and a device with identifiers."""
    components = set()
    for topic, payload in _all_configs():
        component = topic.split("/")[1]
        components.add(component)
        assert ha.missing_keys(component, payload) == [], topic
        assert payload["availability_topic"] == "streamer/front-door/availability"
        assert payload["device"]["identifiers"] == ["streamer_front-door"]
    assert components == {"binary_sensor", "sensor", "camera"}
    assert ha.missing_keys("camera", {"name": "x"}) == ["topic", "unique_id", "device"]
    assert ha.missing_keys("sensor", {"state_topic": "t", "unique_id": "u", "device": {"name": "d"}}) == [
        "device.identifiers"
    ]


def test_discovery_topics_and_ids_are_safe_and_unique():
    configs = _all_configs()
    for topic, payload in configs:
        prefix, component, node, object_id, leaf = topic.split("/")
        assert (prefix, leaf) == ("homeassistant", "config")
        assert re.match(r"^[a-zA-Z0-9_-]+$", node) and re.match(r"^[a-zA-Z0-9_-]+$", object_id), topic
        assert re.match(r"^[a-zA-Z0-9_-]+$", payload["unique_id"])
        for key in ("state_topic", "topic"):
            if key in payload:
                assert not set(payload[key]) & {"+", "#", "\0"}
    unique_ids = [payload["unique_id"] for _, payload in configs]
    assert len(set(unique_ids)) == len(unique_ids)


def test_no_camera_without_snapshots():
    assert {t.split("/")[1] for t, _ in ha.device_configs("c", "p", "homeassistant", snapshot=False)} == {"sensor"}


def test_mqtt_config_defaults():
    cfg = Config()
    assert (cfg.mqtt.url, cfg.mqtt.qos, cfg.mqtt.keepalive_s, cfg.mqtt.ha_discovery, cfg.name) == (
        None,
        0,
        10,
        False,
        None,
    )
    assert cfg.mqtt.keepalive_s * 1.5 < 30  # a vanished camera reads offline within 30 s


@pytest.mark.parametrize(
    ("overrides", "key", "reason"),
    [
        ({"mqtt.url": "http://broker"}, "mqtt.url", "mqtt://"),
        ({"mqtt.url": "mqtt://broker:99999"}, "mqtt.url", "port"),
        ({"mqtt.url": "mqtt://u:hunter22@broker"}, "mqtt.url", "no password"),
        ({"mqtt.url": "mqtt://broker/path"}, "mqtt.url", "mqtt://"),
        ({"mqtt.protocol": "4"}, "mqtt.protocol", "3.1.1 or 5"),
        ({"mqtt.qos": 3}, "mqtt.qos", "0 to 2"),
        ({"mqtt.prefix": "a/+/b"}, "mqtt.prefix", "without +"),
        ({"mqtt.prefix": "$SYS/x"}, "mqtt.prefix", "not starting with $"),
        ({"mqtt.url": "mqtt://broker", "mqtt.ca_file": "ca.pem"}, "mqtt.ca_file", "mqtts://"),
        ({"mqtt.url": "mqtts://broker", "mqtt.cert_file": "c.pem"}, "mqtt.cert_file", "both"),
        ({"name": "///"}, "name", "letters or digits"),
    ],
)
def test_bad_mqtt_settings_are_refused_naming_the_key(overrides, key, reason):
    with pytest.raises(ConfigError) as caught:
        load(None, overrides, env={})
    message = str(caught.value)
    assert message.startswith(key + ":") and reason in message, message
    assert "hunter22" not in message


@pytest.mark.parametrize(
    ("given", "name"), [("Front Door", "front-door"), ("cam1", "cam1"), (7, "7"), ("x" * 300, "x" * 64)]
)
def test_names_are_made_slugs(given, name):
    assert load(None, {"name": given}, env={}).name == name


def test_protocol_5_may_be_written_as_a_number():
    assert load(None, {"mqtt.protocol": 5}, env={}).mqtt.protocol == "5"


def test_every_message_carries_the_name_given_or_made_from_the_source():
    from streamer.message import result_message, status_message
    from streamer.stats import Stats
    from streamer.types import Result

    result = Result("rtsp://user:***@cam.local/live", 7, 1.0, 1.0, 640, 480, model="m/1", sent_at=2.0, received_at=3.0)
    assert result_message(result, 4.0)["name"] == "cam-local-live"
    assert result_message(result, 4.0, name="front-door")["name"] == "front-door"
    assert status_message("synthetic", "running", Stats().snapshot())["name"] == "synthetic"
    assert status_message("synthetic", "running", Stats().snapshot(), name="cam1")["name"] == "cam1"
