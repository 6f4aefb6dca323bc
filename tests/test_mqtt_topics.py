"""The pure parts of the MQTT output: names and class slugs, the per-class state, the Home
Assistant discovery payloads, and the mqtt config keys."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from streamer.config import Config, ConfigError, load
from streamer.names import class_slug, source_name
from streamer.outputs import homeassistant as ha
from streamer.outputs.class_topics import ClassTopics, links
from streamer.stats import Stats
from support.homeassistant import missing_keys

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
    configs = ha.device_configs("front-door", "streamer/front-door", "homeassistant", snapshot, event_snapshot=True)
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
        assert missing_keys(component, payload) == [], topic
        assert payload["availability"][0]["topic"] == "streamer/front-door/availability"
        assert payload["device"]["identifiers"] == ["streamer_front-door"]
    assert components == {"binary_sensor", "sensor", "camera"}
    assert missing_keys("camera", {"name": "x"}) == ["topic", "unique_id", "device"]
    assert missing_keys("sensor", {"state_topic": "t", "unique_id": "u", "device": {"name": "d"}}) == [
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
    configs = ha.device_configs("c", "p", "homeassistant", snapshot=False)
    assert {t.split("/")[1] for t, _ in configs} == {"sensor", "binary_sensor"}


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


def test_class_entities_go_unavailable_with_the_source_or_the_api_and_health_is_diagnostic():
    configs = dict(_all_configs())
    detected = configs["homeassistant/binary_sensor/streamer_front-door/person_detected/config"]
    assert detected["availability_mode"] == "all"
    assert [a["topic"] for a in detected["availability"]] == [
        "streamer/front-door/availability",
        "streamer/front-door/source",
        "streamer/front-door/api",
    ]
    assert all(
        (a["payload_available"], a["payload_not_available"]) == ("online", "offline") for a in detected["availability"]
    )
    health = {topic.split("/")[3]: payload for topic, payload in configs.items() if "entity_category" in payload}
    assert set(health) == {"source_connected", "api_connected", "result_age", "inference_fps"}
    assert all(payload["entity_category"] == "diagnostic" for payload in health.values())
    assert health["api_connected"]["device_class"] == "connectivity"
    assert health["api_connected"]["state_topic"] == "streamer/front-door/api"
    assert health["result_age"]["state_topic"] == "streamer/front-door/diagnostics"


@pytest.mark.parametrize(
    ("topic", "slug"),
    [
        ("homeassistant/binary_sensor/streamer_cam1/person_detected/config", "person"),
        ("homeassistant/sensor/streamer_cam1/hard_hat_count/config", "hard_hat"),
        ("homeassistant/sensor/streamer_cam1/result_age/config", None),
        ("homeassistant/binary_sensor/streamer_cam1/source_connected/config", None),
        ("homeassistant/sensor/streamer_cam1/person_detected/config", None),  # wrong component
        ("homeassistant/binary_sensor/streamer_cam2/person_detected/config", None),  # another camera
        ("homeassistant/binary_sensor/streamer_cam1/_detected/config", None),
        ("other/binary_sensor/streamer_cam1/person_detected/config", None),
    ],
)
def test_the_class_of_a_discovery_config_topic(topic, slug):
    assert ha.class_of_config(topic, "cam1", "homeassistant") == slug


def test_reset_turns_every_class_off_at_once_and_adopt_is_capped_and_safe():
    topics = ClassTopics(max_classes=2, off_delay_s=5)
    topics.update(["person", "person"], now=0)
    assert topics.reset() == [("person/count", "0"), ("person/detected", "OFF")]
    assert topics.reset() == [] and topics.tick(now=0.1) == []  # no ON from before the outage
    assert not topics.adopt("a/b") and not topics.adopt("#") and not topics.adopt("x" * 65)
    assert topics.adopt("car") and topics.slugs == ["person", "car"]
    assert not topics.adopt("dog")  # beyond max_classes
    assert not ClassTopics(["person"]).adopt("car")  # configured classes are exactly those


def _status(source="open", frame_age=0.1, api="ok", result_age=0.2):
    return replace(
        Stats().snapshot(), source_state=source, last_frame_age_s=frame_age, api_state=api, last_result_age_s=result_age
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (_status(), (True, True)),
        (_status(source="starting", frame_age=None, api="starting", result_age=None), (False, False)),
        (_status(source="reconnecting", frame_age=1.0), (False, True)),
        (_status(frame_age=6.0), (False, True)),  # open, but no frame for 6 s
        (_status(api="failing", result_age=1.0), (True, True)),  # one failed request
        (_status(api="failing", result_age=6.0), (True, False)),
        (_status(api="down", result_age=1.0), (True, False)),  # the breaker is open
        (_status(source="reconnecting", frame_age=9.0, result_age=9.0), (False, True)),  # no calls: not the API's fault
    ],
)
def test_links_say_which_of_source_and_api_is_down(status, expected):
    assert links(status) == expected
