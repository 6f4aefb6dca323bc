"""The MQTT output against a real mosquitto (Debian package), with a password file and a TLS
listener signed by a test CA: topics, QoS, retained availability, the Last Will, a broker
that dies and comes back, refused credentials, hostile class names, and no password leaks."""

from __future__ import annotations

import json
import signal
import threading
import time

import cv2
import numpy as np
import pytest
from conftest import clean_env, need, need_tool

from streamer.config import load
from streamer.credentials import MQTT_PASSWORD, resolve_secret
from streamer.errors import ConfigError
from streamer.live.dispatch import InferenceSettings
from streamer.live.pipeline import Outputs
from streamer.names import class_slug
from streamer.outputs.mqtt import MqttPublisher
from streamer.standin.server import ApiServer
from support import tls
from support.homeassistant import missing_keys
from support.mosquitto import PASSWORD, USER, Broker, Recorder, tools_available
from support.running import Running, streamer_threads, wait_until

PREFIX = "streamer/cam1"


@pytest.fixture
def broker(tmp_path):
    missing = tools_available()
    need(missing is None, f"{missing} not installed (see scripts/install-system-deps.sh)")
    need_tool("openssl")
    folder = tmp_path / "broker"
    folder.mkdir()
    ca = tls.authority(folder)
    cert, key = tls.issued(folder, ca, "broker")
    broker = Broker(folder, tls=(ca[0], cert, key)).start()
    broker.ca = ca[0]
    yield broker
    broker.stop()


@pytest.fixture
def api():
    with ApiServer("127.0.0.1", 0, detector=False) as server:
        yield server


def run_args(api: ApiServer, broker: Broker, *extra: str) -> list[str]:
    return [
        "run",
        "--source",
        "synthetic",
        "--api-url",
        api.url,
        "--model",
        "synthetic/1",
        "--headless",
        "--max-fps",
        "10",
        "--mqtt",
        broker.url,
        "--name",
        "Cam1",
        *extra,
    ]


def mqtt_env(password: str = PASSWORD):
    return clean_env(STREAMER_MQTT_PASSWORD=password)


def fresh_retained(broker: Broker, topic: str, timeout_s: float = 5.0):
    """What a new subscriber gets at once on topic: the retained message, or None."""
    with Recorder(broker, topic) as sub:
        sub.wait_for(lambda messages: messages, timeout_s)
        retained = [m for m in sub.messages if m.retain]
    return retained[-1] if retained else None


def test_run_publishes_every_topic_and_says_offline_at_exit(broker, api, spawn, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("mqtt:\n  ha_discovery: true\n  snapshot_s: 0.5\n")
    with Recorder(broker, "#") as sub:
        proc = spawn([*run_args(api, broker, "-c", str(config))], env=mqtt_env())
        assert sub.wait_for(lambda m: sum(x.topic == f"{PREFIX}/status" for x in m) >= 2, 20), proc.stderr
        assert sub.wait_for(lambda m: any(x.topic == f"{PREFIX}/snapshot" for x in m), 10)
        code, took = proc.terminate(signal.SIGTERM, timeout=10)
        assert code == 0 and took < 5
        assert sub.wait_for(said_offline, 5)
    detections = sub.on(f"{PREFIX}/detections")
    assert detections and all(m.qos == 0 for m in detections)
    first = json.loads(detections[0].payload)
    assert (first["type"], first["name"], first["source"]) == ("detections", "cam1", "synthetic")
    statuses = sub.on(f"{PREFIX}/status")
    assert all(m.qos == 1 for m in statuses)
    assert json.loads(statuses[-1].payload)["state"] == "stopped" and json.loads(statuses[-1].payload)["name"] == "cam1"
    assert "mqtt_dropped" in json.loads(statuses[0].payload)["counters"]
    assert [m.payload for m in sub.on(f"{PREFIX}/availability")] == [b"online", b"offline"]
    assert [m.payload for m in sub.on(f"{PREFIX}/red-square/count")][:1] == [b"1"]
    assert [m.payload for m in sub.on(f"{PREFIX}/red-square/detected")][:1] == [b"ON"]
    # Retained: a subscriber that comes after the exit still learns all of it.
    assert fresh_retained(broker, f"{PREFIX}/availability").payload == b"offline"
    # A clean exit leaves nothing ON: nothing is known once streamer stops.
    assert fresh_retained(broker, f"{PREFIX}/blue-box/count").payload == b"0"
    assert fresh_retained(broker, f"{PREFIX}/blue-box/detected").payload == b"OFF"
    assert fresh_retained(broker, f"{PREFIX}/source").payload == b"offline"
    jpeg = fresh_retained(broker, f"{PREFIX}/snapshot").payload
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[:2] == (720, 1280)
    with Recorder(broker, "homeassistant/#") as discovery:
        # source, API, age, fps, 2 cameras + 2 per class
        assert discovery.wait_for(lambda m: len(m) >= 12, 5)
    for message in discovery.messages:
        component = message.topic.split("/")[1]
        assert message.retain and missing_keys(component, json.loads(message.payload)) == []
    assert {m.topic.split("/")[1] for m in discovery.messages} == {"binary_sensor", "sensor", "camera"}
    assert PASSWORD not in proc.stdout + proc.stderr


def test_last_will_marks_a_killed_streamer_offline(broker, api, spawn):
    proc = spawn(run_args(api, broker), env=mqtt_env())
    with Recorder(broker, f"{PREFIX}/availability") as sub:
        assert sub.wait_for(lambda m: m and m[-1].payload == b"online", 20), proc.stderr
        proc.popen.send_signal(signal.SIGKILL)
        proc.wait(5)
        assert sub.wait_for(lambda m: m[-1].payload == b"offline", 5)
    assert fresh_retained(broker, f"{PREFIX}/availability").payload == b"offline"


def test_refused_credentials_stop_with_one_line_and_exit_2(broker, api, spawn):
    proc = spawn([*run_args(api, broker), "--duration", "20"], env=mqtt_env("wrong-password-xyz"))
    assert proc.wait(15) == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "mqtt.url" in errors[0] and "refused user 'cam'" in errors[0], proc.stderr
    assert "check the user in mqtt.url and the password" in errors[0], errors[0]
    assert "wrong-password-xyz" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_password_on_the_command_line_is_refused_and_never_shown(api, spawn):
    proc = spawn(["run", "--source", "synthetic", "--model", "a/1", "--mqtt", "mqtt://cam:hunter22pw@127.0.0.1"])
    assert proc.wait(15) == 2
    assert "mqtt.url" in proc.stderr and "no password" in proc.stderr
    assert "hunter22pw" not in proc.stderr + proc.stdout


def test_broker_killed_and_restarted_detections_resume_and_the_pipeline_never_stalls(broker, api, spawn, tmp_path):
    jsonl = tmp_path / "results.jsonl"
    config = tmp_path / "c.yaml"
    config.write_text("mqtt:\n  ha_discovery: true\n")
    proc = spawn([*run_args(api, broker, "-c", str(config)), "--jsonl", str(jsonl)], env=mqtt_env())
    with Recorder(broker, [f"{PREFIX}/#", "homeassistant/#"]) as sub:
        assert sub.wait_for(lambda m: len([x for x in m if x.topic.endswith("/detections")]) >= 5, 20), proc.stderr

        def lines() -> int:
            return len(jsonl.read_bytes().splitlines())

        def rate(count: int) -> float:
            """Results a second the pipeline publishes (to JSONL), over the next ``count``."""
            started, first = time.monotonic(), lines()
            wait_until(lambda: lines() >= first + count, 15, lambda: f"{count} results\n{proc.stderr[-2000:]}")
            return count / (time.monotonic() - started)

        rate_before = rate(20)
        broker.kill()
        rate_during = rate(30)  # while the broker is away
        broker.start()
        restarted_at = time.time()
        assert sub.wait_for(lambda m: any(x.topic.endswith("/detections") and x.at > restarted_at for x in m), 10)
        resumed_s = min(x.at for x in sub.messages if x.topic.endswith("/detections") and x.at > restarted_at)
        assert resumed_s - restarted_at < 5, proc.stderr
        # availability and discovery are said again after the reconnect (the broker kept nothing)
        assert sub.wait_for(lambda m: any(x.topic.endswith("/availability") and x.at > restarted_at for x in m), 5)
        assert any(x.topic.startswith("homeassistant/") and x.at > restarted_at for x in sub.messages)
        assert sub.wait_for(
            lambda m: any(
                x.topic.endswith("/status") and json.loads(x.payload)["counters"]["mqtt_dropped"] > 0 for x in m
            ),
            10,
        )
    # The results/s with the broker gone is that with it there (about 10/s); a stalled pipeline gives ~0.
    assert rate_before >= 5 and rate_during >= rate_before * 0.6, (rate_before, rate_during)
    assert "lost the MQTT broker" in proc.stderr and "reached again" in proc.stderr
    assert json.loads(jsonl.read_bytes().splitlines()[0])["name"] == "cam1"  # JSONL carries the name too
    code, _ = proc.terminate()
    assert code == 0
    assert PASSWORD not in proc.stderr + proc.stdout


def test_unreachable_broker_at_start_is_a_warning_and_streamer_connects_later(broker, api, spawn):
    broker.kill()
    proc = spawn(run_args(api, broker), env=mqtt_env())
    assert proc.wait_for_log("not reachable yet", 20), proc.stderr
    assert proc.popen.poll() is None
    broker.start()
    with Recorder(broker, f"{PREFIX}/detections") as sub:
        assert sub.wait_for(lambda m: m, 10), proc.stderr
    code, _ = proc.terminate()
    assert code == 0


def said_offline(messages) -> bool:
    return [m.payload for m in messages if m.topic == f"{PREFIX}/availability"][-1:] == [b"offline"]


def _publisher(broker: Broker, tmp_path, **mqtt) -> MqttPublisher:
    keys = {"mqtt.url": broker.url, **{f"mqtt.{k}": v for k, v in mqtt.items()}}
    config = load(None, keys, env={})
    return MqttPublisher(config.mqtt, "cam1", config.inference.classes, PASSWORD)


def test_tls_with_a_test_ca_and_mqtt_5_and_qos_1(broker, tmp_path):
    url = f"mqtts://{USER}@localhost:{broker.tls_port}"
    config = load(None, {"mqtt.url": url, "mqtt.ca_file": str(broker.ca), "mqtt.protocol": 5, "mqtt.qos": 1}, env={})
    with Recorder(broker, f"{PREFIX}/#") as sub:
        publisher = MqttPublisher(config.mqtt, "cam1", (), PASSWORD)
        try:
            assert publisher.tls and publisher.send(b'{"predictions": []}')
            network = [t for t in threading.enumerate() if t.name == "mqtt"]
            assert len(network) == 1  # paho's loop, named for the OS too
            assert open(f"/proc/self/task/{network[0].native_id}/comm").read().strip() == "mqtt"
            assert sub.wait_for(lambda m: any(x.topic.endswith("/detections") for x in m), 5)
        finally:
            publisher.close()
        assert sub.wait_for(said_offline, 5)  # acked by the broker is not yet delivered to us
    assert sub.on(f"{PREFIX}/detections")[0].qos == 1
    assert [m.payload for m in sub.on(f"{PREFIX}/availability")] == [b"online", b"offline"]


def test_tls_refuses_a_broker_the_ca_did_not_sign(broker, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    ca = tls.authority(other)
    config = load(None, {"mqtt.url": f"mqtts://{USER}@localhost:{broker.tls_port}", "mqtt.ca_file": str(ca[0])}, env={})
    publisher = MqttPublisher(config.mqtt, "cam1", (), PASSWORD)
    try:
        assert not publisher.send(b"{}") and publisher.dropped == 1
    finally:
        publisher.close()


HOSTILE = ["a/b", "+", "#", "nul\0here", "x" * 1000, "$SYS/x"]


def test_hostile_class_names_from_the_api_keep_the_client_connected_and_topics_bounded(broker, tmp_path):
    boxes = [{"x": 10.0, "y": 10.0, "width": 5.0, "height": 5.0, "confidence": 0.9, "class": c} for c in HOSTILE]
    publisher = _publisher(broker, tmp_path, max_classes=4, ha_discovery=True)
    with ApiServer("127.0.0.1", 0, predictions=boxes) as api, Recorder(broker, "#") as sub:
        running = Running(
            api.url, Outputs(outputs=[publisher]), settings=InferenceSettings(max_fps=10.0, max_in_flight=1)
        )
        try:
            assert wait_until(lambda: running.stats.published >= 10, 20)
            assert sub.wait_for(lambda m: len([x for x in m if x.topic.endswith("/detections")]) >= 10, 10)
        finally:
            running.finish()
        assert sub.wait_for(said_offline, 5)
    assert streamer_threads() == []  # the test's subscriber has gone too
    topics = {m.topic for m in sub.messages}
    class_levels = {t.split("/")[2] for t in topics if t.startswith(PREFIX) and t.count("/") == 3}
    assert class_levels == {class_slug(c) for c in HOSTILE[:4]}  # the first 4 seen, capped
    assert class_levels == {"a_b", class_slug("+"), class_slug("#"), "nul_here"}
    for topic in topics:
        assert not set(topic) & {"+", "#", "\0"} and len(topic) < 200, topic
    assert publisher.dropped == 0  # never disconnected by the broker
    assert [m.payload for m in sub.on(f"{PREFIX}/availability")] == [b"online", b"offline"]
    assert "x" * 100 in json.loads(sub.on(f"{PREFIX}/detections")[0].payload)["predictions"][4]["class"]


def test_publishing_never_waits_for_a_broker_that_is_gone(broker, tmp_path):
    publisher = _publisher(broker, tmp_path)
    try:
        broker.kill()
        assert wait_until(lambda: not publisher._connected.is_set(), 5)
        started = time.monotonic()
        results = [publisher.send(b'{"predictions": [{"class": "person"}]}') for _ in range(2000)]
        assert time.monotonic() - started < 1.0
        assert not any(results) and publisher.dropped == 2000
    finally:
        publisher.close()
    assert streamer_threads() == []


def test_password_from_a_file_and_a_systemd_credential(tmp_path):
    (tmp_path / "pw").write_text("from-file-pw\n")
    cfg = load(None, {"mqtt.password_file": str(tmp_path / "pw")}, env={})
    assert resolve_secret(cfg, MQTT_PASSWORD, env={}) == "from-file-pw"
    assert resolve_secret(cfg, MQTT_PASSWORD, env={"STREAMER_MQTT_PASSWORD": "from-env-pw"}) == "from-env-pw"
    (tmp_path / "mqtt_password").write_text("from-credential-pw")
    credential = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert resolve_secret(load(None, {}, env={}), MQTT_PASSWORD, env=credential) == "from-credential-pw"
    with pytest.raises(ConfigError, match="mqtt.password_file: cannot read"):
        resolve_secret(load(None, {"mqtt.password_file": str(tmp_path / "nope")}, env={}), MQTT_PASSWORD, env={})


def test_a_login_refused_with_no_password_given_says_so_and_a_connection_is_said_once(broker, api, spawn):
    """Issue 21: a broker that wants a password, and none was given: the line says that no password
    was given and where to put it.  With the password, `MQTT: connected to ...` is logged."""
    refused = spawn([*run_args(api, broker), "--duration", "20"], env=clean_env(), name="refused")
    assert refused.wait(15) == 2
    (error,) = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert "refused user 'cam'" in error and "no password was given: set $STREAMER_MQTT_PASSWORD" in error, error
    ok = spawn([*run_args(api, broker), "--duration", "3"], env=mqtt_env(), name="ok")
    assert ok.wait(20) == 0, ok.stderr
    connected = [line for line in ok.stderr.splitlines() if "MQTT: connected to mqtt://127.0.0.1:" in line]
    assert len(connected) == 1, ok.stderr
