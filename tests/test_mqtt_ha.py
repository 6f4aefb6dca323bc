"""Home Assistant tells the truth, against a real mosquitto: class entities go unavailable and
OFF in a camera or API outage, retained state and discovery configs are set right at start and
at exit (no orphans across runs), the event snapshot, and diagnostic sensors kept quiet."""

from __future__ import annotations

import json
import signal
import time

import cv2
import numpy as np
import pytest
from conftest import clean_env, need

from streamer.config import load
from streamer.live.dispatch import InferenceSettings
from streamer.live.pipeline import Outputs
from streamer.outputs.mqtt import DIAGNOSTICS_S, MqttPublisher
from streamer.sources.synthetic import SyntheticScene
from streamer.standin.server import ApiServer, Fault
from support.mosquitto import PASSWORD, Broker, Recorder, tools_available
from support.running import Running, wait_until
from support.web import SwitchableSource

PREFIX = "streamer/cam1"
NODE = "homeassistant/%s/streamer_cam1"
PERSON = {"x": 320.0, "y": 250.0, "width": 60.0, "height": 120.0, "confidence": 0.9, "class": "person"}
CAR = {"x": 120.0, "y": 250.0, "width": 80.0, "height": 50.0, "confidence": 0.8, "class": "car"}
MARK = "test/retained-marker"


@pytest.fixture
def broker(tmp_path):
    missing = tools_available()
    need(missing is None, f"{missing} not installed (see scripts/install-system-deps.sh)")
    broker = Broker(tmp_path).start()
    yield broker
    broker.stop()


def retained(broker: Broker, topic: str) -> dict[str, bytes]:
    """Every retained message under ``topic`` now, by topic: a marker published after the
    subscription comes after them (the broker sends retained messages at the subscribe)."""
    with Recorder(broker, [topic, MARK]) as sub:
        sub.client.publish(MARK, b"x", qos=1)
        assert sub.wait_for(lambda m: any(x.topic == MARK for x in m), 5)
        return {m.topic: m.payload for m in sub.messages if m.retain and m.topic != MARK}


def latest(messages, topic: str) -> bytes | None:
    values = [m.payload for m in messages if m.topic == topic]
    return values[-1] if values else None


def available(messages, config_topic: str) -> bool:
    """Whether Home Assistant shows the entity of this discovery config as available."""
    config = json.loads(latest(messages, config_topic))
    states = [latest(messages, a["topic"]) == a["payload_available"].encode() for a in config["availability"]]
    return all(states) if config.get("availability_mode") == "all" else any(states)


def _publisher(broker: Broker, **mqtt) -> MqttPublisher:
    keys = {"mqtt.url": broker.url, "mqtt.ha_discovery": True, **{f"mqtt.{k}": v for k, v in mqtt.items()}}
    config = load(None, keys, env={})
    return MqttPublisher(config.mqtt, "cam1", config.inference.classes, PASSWORD)


def test_a_camera_or_api_outage_makes_class_entities_unavailable_and_off_within_10_s(broker):
    """With the default 2 s heartbeat; prints the times measured (pytest -s)."""
    person = NODE % "binary_sensor" + "/person_detected/config"
    source = SwitchableSource(640, 360, 30.0)
    publisher = _publisher(broker, snapshot_s=0)
    settings = InferenceSettings(max_fps=10.0, max_in_flight=1)
    with ApiServer("127.0.0.1", 0, predictions=[PERSON]) as api, Recorder(broker, "#") as sub:
        running = Running(api.url, Outputs(outputs=[publisher]), source=source, settings=settings, heartbeat_s=2.0)

        def seen_ok(m) -> bool:
            return latest(m, f"{PREFIX}/person/detected") == b"ON" and available(m, person)

        def told_down(link: str):
            return lambda m: (
                latest(m, f"{PREFIX}/{link}") == b"offline"
                and latest(m, f"{PREFIX}/person/detected") == b"OFF"
                and latest(m, f"{PREFIX}/person/count") == b"0"
                and not available(m, person)
            )

        measured = {}
        try:
            assert sub.wait_for(seen_ok, 15)
            for link, down, back in (
                ("source", source.down.set, source.down.clear),
                ("api", lambda: api.set_fault(Fault(503)), lambda: api.set_fault(None)),
            ):
                started = time.monotonic()
                down()
                assert sub.wait_for(told_down(link), 10), link
                measured[link] = time.monotonic() - started
                back()
                assert sub.wait_for(seen_ok, 15), link
        finally:
            running.finish()
            publisher.close()
    print(f"\noutage seen in Home Assistant after: camera {measured['source']:.1f} s, API {measured['api']:.1f} s")
    assert max(measured.values()) < 10


def _run(api: ApiServer, broker: Broker, config, *extra: str) -> list[str]:
    return [
        "run", "--source", "synthetic", "--api-url", api.url, "--model", "synthetic/1", "--headless",
        "--max-fps", "10", "--mqtt", broker.url, "--name", "cam1", "-c", str(config), *extra,
    ]  # fmt: skip


def test_retained_state_and_discovery_are_true_after_a_run_with_other_classes(broker, spawn, tmp_path):
    """Run 1 sees person and car, with snapshots, and is killed (its states stay ON).  Run 2
    has only person configured, no snapshots of either kind, and sees nothing: at its start person reads
    OFF and car's states and entities, and the cameras, are gone; at its exit nothing is ON."""
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("mqtt:\n  ha_discovery: true\n  snapshot_s: 1\n")
    second.write_text(
        "inference:\n  classes: [person]\nmqtt:\n  ha_discovery: true\n  snapshot_s: 0\n  event_snapshot: false\n"
    )
    env = clean_env(STREAMER_MQTT_PASSWORD=PASSWORD)
    car = [NODE % "binary_sensor" + "/car_detected/config", NODE % "sensor" + "/car_count/config"]
    with ApiServer("127.0.0.1", 0, predictions=[PERSON, CAR]) as api:
        proc = spawn(_run(api, broker, first), env=env)
        assert wait_until(lambda: retained(broker, f"{PREFIX}/car/detected") == {f"{PREFIX}/car/detected": b"ON"}, 20)
        assert set(car) <= set(retained(broker, "homeassistant/#")), proc.stderr
        proc.popen.send_signal(signal.SIGKILL)
        proc.wait(5)
        api.fixed_predictions = ()
        proc = spawn(_run(api, broker, second), env=env)
        assert wait_until(lambda: retained(broker, f"{PREFIX}/car/#") == {}, 20), proc.stderr
        states = retained(broker, f"{PREFIX}/#")
        assert states[f"{PREFIX}/person/detected"] == b"OFF" and states[f"{PREFIX}/person/count"] == b"0"
        assert wait_until(lambda: not {t for t in retained(broker, "homeassistant/#") if "/camera/" in t}, 10)
        configs = retained(broker, "homeassistant/#")
        assert {t.split("/")[3] for t in configs} == {
            "person_detected", "person_count", "source_connected", "api_connected", "result_age", "inference_fps"
        }  # fmt: skip
        code, _ = proc.terminate(signal.SIGTERM, timeout=10)
        assert code == 0
    states = retained(broker, f"{PREFIX}/#")
    assert states[f"{PREFIX}/person/detected"] == b"OFF" and states[f"{PREFIX}/availability"] == b"offline"
    assert states[f"{PREFIX}/source"] == b"offline" and states[f"{PREFIX}/api"] == b"offline"


def test_classes_an_earlier_run_announced_are_taken_on_up_to_max_classes(broker):
    """Without configured classes a run keeps the classes an earlier one announced (their
    entities stay, reading OFF), as many as mqtt.max_classes; the rest are removed."""
    with Recorder(broker, MARK) as earlier:
        for slug in ("car", "dog"):
            earlier.client.publish(f"{PREFIX}/{slug}/detected", "ON", qos=1, retain=True)
            earlier.client.publish(f"{PREFIX}/{slug}/count", "2", qos=1, retain=True)
            topic = NODE % "binary_sensor" + f"/{slug}_detected/config"
            earlier.client.publish(topic, json.dumps({"name": slug}), qos=1, retain=True).wait_for_publish(5)
    publisher = _publisher(broker, max_classes=1)
    try:
        expected = {f"{PREFIX}/car/detected": b"OFF"}
        assert wait_until(lambda: retained(broker, f"{PREFIX}/+/detected") == expected, 10)
        assert retained(broker, f"{PREFIX}/+/count") == {f"{PREFIX}/car/count": b"0"}
        configs = retained(broker, "homeassistant/#")
        assert NODE % "sensor" + "/car_count/config" in configs and not [t for t in configs if "dog" in t]
    finally:
        publisher.close()


def test_a_class_turning_on_sends_the_picture_of_that_result(broker):
    """The event snapshot: at once (not on the 30 s timer), retained, with the boxes, the
    camera's name and time in the bottom left corner and no status band at the top."""
    with ApiServer("127.0.0.1", 0, predictions=[]) as api, Recorder(broker, f"{PREFIX}/#") as sub:
        running = Running(api.url, settings=InferenceSettings(max_fps=10.0, max_in_flight=1))
        keys = {"mqtt.url": broker.url, "mqtt.snapshot_s": 30}
        publisher = MqttPublisher(
            load(None, keys, env={}).mqtt,
            "cam1",
            (),
            PASSWORD,
            snapshot=running.pipeline.annotated,
            event_frame=running.pipeline.event_frame,
        )
        running.pipeline.add_output(publisher)
        try:
            assert sub.wait_for(lambda m: latest(m, f"{PREFIX}/snapshot"), 10)
            assert wait_until(lambda: running.stats.published >= 5, 10)
            api.fixed_predictions = (PERSON,)
            assert sub.wait_for(lambda m: latest(m, f"{PREFIX}/person/detected") == b"ON", 10)
            on_at = sub.on(f"{PREFIX}/person/detected")[-1].at
            assert sub.wait_for(lambda m: latest(m, f"{PREFIX}/event_snapshot"), 5)
            assert sub.on(f"{PREFIX}/event_snapshot")[0].at - on_at < 1.0
        finally:
            running.finish()
            publisher.close()
    periodic = sub.on(f"{PREFIX}/snapshot")
    assert len(periodic) == 1  # the timer's own, only at start: the event one came besides it
    jpeg = retained(broker, f"{PREFIX}/event_snapshot")[f"{PREFIX}/event_snapshot"]
    event = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    timer = cv2.imdecode(np.frombuffer(periodic[0].payload, np.uint8), cv2.IMREAD_COLOR)
    background = SyntheticScene(640, 360)._background
    band = slice(0, 14)

    def top(image):
        return float(np.median(image[band]))

    assert top(timer) < 0.6 * top(background)  # the status band darkens the top ...
    assert abs(top(event) - top(background)) < 6  # ... of the timer's picture only
    corner = event[-20:, :150]
    assert (corner.min(axis=2) > 180).sum() > 30  # the caption's white text
    x0, y0 = int(PERSON["x"] - PERSON["width"] / 2), int(PERSON["y"] - PERSON["height"] / 2)
    assert np.abs(event[y0 + 10 : y0 + 50, x0].astype(int) - background[y0 + 10 : y0 + 50, x0]).max() > 60  # the box


def test_health_sensors_are_diagnostic_and_published_no_more_often_than_needed(broker):
    publisher = _publisher(broker, snapshot_s=0)
    with ApiServer("127.0.0.1", 0, predictions=[PERSON]) as api, Recorder(broker, f"{PREFIX}/#") as sub:
        running = Running(api.url, Outputs(outputs=[publisher]))  # heartbeats every 0.5 s
        try:
            assert sub.wait_for(lambda m: len([x for x in m if x.topic == f"{PREFIX}/status"]) >= 8, 15)
        finally:
            running.finish()
            publisher.close()
    configs = retained(broker, "homeassistant/#")
    health = [NODE % "sensor" + "/result_age/config", NODE % "binary_sensor" + "/api_connected/config"]
    assert all(json.loads(configs[topic])["entity_category"] == "diagnostic" for topic in health)
    diagnostics = sub.on(f"{PREFIX}/diagnostics")
    assert len(diagnostics) == 1 and DIAGNOSTICS_S >= 30  # one in the run, not one per heartbeat
    assert set(json.loads(diagnostics[0].payload)) == {"last_result_age_s", "inference_fps"}
