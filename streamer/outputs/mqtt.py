"""The MQTT output: detections, heartbeats, availability, the source's and the API's state,
per-class state and snapshots, published to a broker through paho-mqtt, never blocking the
pipeline.

paho's network loop runs in its own thread (``mqtt``), which also reconnects, with a
backoff capped at 2 s.  ``send`` and ``send_status`` only queue a message: while the
broker is away, or while the outgoing queue is full, detections are dropped and counted
(``mqtt_dropped`` in the heartbeat).  A Last Will marks the camera ``offline`` if the
process dies or loses the network; a clean exit says so itself.  On every (re)connect
availability, the Home Assistant discovery configs and the per-class state are published
again (retained), since a broker without persistence forgets them when it restarts.

What is retained tells the truth across runs: at the first connect streamer reads back, for
a few seconds and a bounded number of messages, the retained class states and discovery
configs an earlier run left under its own name; it takes on those classes (when it has no
configured classes and there is room) or removes them (an empty retained message), and
removes configs of entities it will not publish.  In an outage (``class_topics.links``) and
at a clean exit the class states are reset and ``<prefix>/source`` and ``<prefix>/api`` say
``offline``, which makes the class entities unavailable in Home Assistant.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from streamer.config import MqttConfig
from streamer.credentials import MQTT_PASSWORD
from streamer.errors import ConfigError
from streamer.imaging import encode_jpeg
from streamer.outputs import homeassistant as ha
from streamer.outputs.class_topics import OFF, ON, ClassTopics, links
from streamer.threads import named_thread, set_os_thread_name
from streamer.types import Delivery, Frame, Result

log = logging.getLogger(__name__)

# CONNACK reason codes for refused credentials: MQTT 5 "bad user name or password", "not
# authorized" and "bad authentication method" (paho maps 3.1.1's codes 4 and 5 to the first two).
REFUSED = {134, 135, 140}
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 2.0  # the broker back: detections again within about 2 s
SNAPSHOT_QUALITY = 80
DIAGNOSTICS_S = 30.0  # <prefix>/diagnostics at most this often (Home Assistant records every change)
SWEEP_S = 5.0  # how long after the first connect retained topics of an earlier run are looked at
SWEEP_MAX = 4100  # and how many at most: 2 configs and a state per class (max_classes <= 1000), and slack


class MqttPublisher:
    """An output (``deliver``, ``close``) that publishes to MQTT.

    ``snapshot``: returns the newest annotated frame (``Pipeline.annotated``); it is asked at
    most every mqtt.snapshot_s seconds, from this publisher's own thread.  ``event_frame``:
    returns a result's picture (``Pipeline.event_frame``), asked from that thread when a
    class turns ON (mqtt.event_snapshot)."""

    def __init__(
        self,
        cfg: MqttConfig,
        name: str,
        classes: list[str] | tuple[str, ...] = (),
        password: str | None = None,
        snapshot: Callable[[], Frame | None] | None = None,
        event_frame: Callable[[Result], Frame | None] | None = None,
    ):
        if not cfg.url:
            raise ConfigError("mqtt.url: not set; pass --mqtt mqtt://HOST or set mqtt.url")
        self.cfg = cfg
        self.name = name
        self.prefix = cfg.prefix or f"streamer/{name}"
        parts = urlsplit(cfg.url)
        self.tls = parts.scheme == "mqtts"
        self.host, self.port = parts.hostname or "", parts.port or (8883 if self.tls else 1883)
        self.user = parts.username
        self.where = f"{parts.scheme}://{self.host}:{self.port}"
        self.dropped = 0  # detections messages not queued (mqtt_dropped in the heartbeat)
        self.output_name = "mqtt"
        self._classes = ClassTopics(classes, cfg.max_classes, cfg.off_delay_s)
        self._lock = threading.Lock()  # the class state and the counters
        self._connected = threading.Event()
        self._first_outcome = threading.Event()
        self._refused: mqtt.ReasonCode | None = None
        self._lost_at: float | None = None  # monotonic time the connection was lost
        self._dropped_at_loss = 0
        self._unsent = 0  # our messages paho holds that are not yet written (QoS 0) or acknowledged
        self._warned_ignored = False
        self._closing = threading.Event()
        self._has_password = password is not None
        self._client = self._make_client(password)
        self._snapshot = snapshot if cfg.snapshot_s > 0 else None
        self._event_frame = event_frame if cfg.event_snapshot else None
        self._event: Result | None = None  # the result a class turned ON with, for the image thread
        self._wake = threading.Event()  # wakes the image thread: an event, or the close
        self._snapshot_thread: threading.Thread | None = None
        self._links = {"source": False, "api": False}  # as last told; nothing works before it is seen to
        self._diagnostics: tuple[float, tuple] = (float("-inf"), ())  # when sent, and what
        self._sweep_until: float | None = None  # the end of the look at an earlier run's topics
        self._swept = 0
        self._sweep_filters = [ha.config_filter(name, cfg.discovery_prefix), f"{self.prefix}/+/detected"]
        self._start()

    # --- set-up ---

    def _make_client(self, password: str | None) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"streamer-{self.name}",
            protocol=mqtt.MQTTv5 if self.cfg.protocol == "5" else mqtt.MQTTv311,
        )
        if self.user:  # load() has refused a password without a user
            client.username_pw_set(self.user, password)
        if self.tls:
            self._set_tls(client)
        client.will_set(f"{self.prefix}/availability", "offline", qos=1, retain=True)
        client.max_queued_messages_set(self.cfg.queue_size)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.on_connect = self._on_connect
        client.on_connect_fail = lambda client, userdata: self._first_outcome.set()
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _set_tls(self, client: mqtt.Client) -> None:
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(self.cfg, key)
            if path and not Path(path).is_file():
                raise ConfigError(f"mqtt.{key}: {path} does not exist; name an existing PEM file")
        try:
            client.tls_set(ca_certs=self.cfg.ca_file, certfile=self.cfg.cert_file, keyfile=self.cfg.key_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(
                f"mqtt.ca_file / mqtt.cert_file / mqtt.key_file: cannot use them: {exc}; give PEM files"
            ) from None

    def _start(self) -> None:
        """Connect in paho's thread, waiting (bounded) for the broker's first answer."""
        self._client.connect_async(self.host, self.port, keepalive=self.cfg.keepalive_s)
        self._client.loop_start()
        thread = getattr(self._client, "_thread", None)  # paho names it after the client id
        if thread is not None:
            thread.name = "mqtt"
            set_os_thread_name(thread)
        self._first_outcome.wait(self.cfg.connect_timeout_s)
        if self._refused is not None:
            self.close()
            where = f"{MQTT_PASSWORD.value}, {MQTT_PASSWORD.file} or the {MQTT_PASSWORD.credential} credential"
            who = f"user {self.user!r}" if self.user else "a client without a user name"
            fix = (
                f"check the user in mqtt.url and the password in {where}"
                if self._has_password
                else f"no password was given: set {where}"
                if self.user
                else "put the user in mqtt.url (mqtt://USER@HOST) and the password in " + where
            )
            raise ConfigError(f"mqtt.url: the broker at {self.where} refused {who} ({self._refused}); {fix}")
        if self._connected.is_set():
            log.info(
                "MQTT: connected to %s; publishing under %s/ (MQTT %s)",
                self.where,
                self.prefix,
                self.cfg.protocol,
            )
        else:
            self._lost_at = time.monotonic()
            log.warning(
                "MQTT broker at %s not reachable yet; streamer runs on and keeps trying "
                "(detections are dropped and counted meanwhile)",
                self.where,
            )
        if self._snapshot is not None or self._event_frame is not None:
            self._snapshot_thread = named_thread("mqtt-snapshot", self._image_loop)
            self._snapshot_thread.start()

    # --- paho's callbacks, in the mqtt thread ---

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            if reason_code.value in REFUSED:
                if self._refused is None and not self._first_outcome.is_set():
                    self._refused = reason_code
                elif self._lost_at is not None:
                    log.debug("MQTT broker at %s refused the credentials (%s)", self.where, reason_code)
            self._first_outcome.set()
            return
        with self._lock:
            self._unsent = 0  # paho dropped what it had not written when the connection went
            retained = self._classes.retained()
            slugs = self._classes.slugs
            dropped = self.dropped - self._dropped_at_loss
            states = dict(self._links)
        if self._sweep_until is None:  # before our own retained messages: what comes back is older
            self._start_sweep()
        self._publish(f"{self.prefix}/availability", "online", qos=1, retain=True)
        self._publish_changes([(link, ha.ONLINE if up else ha.OFFLINE) for link, up in states.items()])
        if self.cfg.ha_discovery:
            for topic, payload in self._device_configs():
                self._publish(topic, json.dumps(payload), qos=1, retain=True)
            for slug in slugs:
                self._discover(slug)
        self._publish_changes(retained)
        self._connected.set()
        if self._lost_at is not None and self._first_outcome.is_set():
            log.info(
                "MQTT broker at %s reached again after %.1f s; %d detections were dropped meanwhile",
                self.where,
                time.monotonic() - self._lost_at,
                dropped,
            )
        self._lost_at = None
        self._first_outcome.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected and not self._closing.is_set():
            self._lost_at = time.monotonic()
            with self._lock:
                self._dropped_at_loss = self.dropped
            log.warning(
                "lost the MQTT broker at %s (%s); reconnecting, detections are dropped and counted meanwhile",
                self.where,
                reason_code,
            )

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            self._unsent = max(0, self._unsent - 1)

    # --- the sink ---

    def deliver(self, delivery: Delivery) -> None:
        if delivery.kind == "status":
            self.send_status(delivery.payload, delivery.status)
        else:  # detections: the result is set
            result = delivery.result
            self.send(delivery.payload, () if result.multi_label else result.class_names(), result)

    def send(self, payload: bytes, class_names: Iterable[str] = (), result: Result | None = None) -> bool:
        """Queue one detections message (and the class state it changes); False if dropped.
        A class turning ON with ``result`` asks the image thread for its event snapshot."""
        with self._lock:
            added, changes = self._classes.update(class_names, time.monotonic())
            ignored = self._classes.ignored_count
        if ignored and not self._warned_ignored:
            self._warned_ignored = True
            log.warning(
                "MQTT: a class beyond the %s gets no topics of its own (it is still in the detections messages)",
                "configured inference.classes" if self._classes.fixed else f"first {self.cfg.max_classes} seen",
            )
        if self._connected.is_set():
            for slug in added:
                self._discover(slug)
            self._publish_changes(changes)
            if result is not None and self._event_frame is not None and any(p == ON for _, p in changes):
                with self._lock:
                    self._event = result
                self._wake.set()
            with self._lock:
                full = self._unsent >= self.cfg.queue_size
            if not full and self._publish(f"{self.prefix}/detections", payload, qos=self.cfg.qos):
                return True
        with self._lock:  # not connected, or paho's queue is full: dropped and counted
            self.dropped += 1
        return False

    def send_status(self, payload: bytes, status) -> bool:
        """Queue one heartbeat (QoS 1), and the OFF states whose delay has passed.  From the
        heartbeat's ``stats.Snapshot``: the source's and the API's state, every class reset
        while either is down, and the diagnostics when due."""
        now = time.monotonic()
        with self._lock:
            changes = self._classes.tick(now)
            told = dict(self._links)
            self._links["source"], self._links["api"] = links(status)
            if not all(self._links.values()):
                changes += self._classes.reset()
            flips = [(link, ha.ONLINE if up else ha.OFFLINE) for link, up in self._links.items() if told[link] != up]
        if not self._connected.is_set():
            return False
        self._publish_changes(flips + changes)
        self._send_diagnostics(status, now)
        self._end_sweep(now)
        return self._publish(f"{self.prefix}/status", payload, qos=1)

    def close(self, timeout_s: float = 2.0) -> bool:
        """Say ``offline`` (retained), disconnect and stop the threads; safe to call again.
        False if paho's thread did not stop in time."""
        if self._closing.is_set():
            return True
        self._closing.set()
        self._wake.set()
        deadline = time.monotonic() + timeout_s
        if self._snapshot_thread is not None:
            self._snapshot_thread.join(timeout_s / 2)
        if self._connected.is_set():
            with self._lock:  # nothing is known once streamer stops: no class is left ON
                changes = self._classes.reset()
                self._links = dict.fromkeys(self._links, False)
            self._publish_changes([(link, ha.OFFLINE) for link in self._links] + changes)
            info = self._client.publish(f"{self.prefix}/availability", "offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):  # not queued: the connection just went
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        thread = getattr(self._client, "_thread", None)
        while True:  # said again: a reconnect under way in paho's thread overwrites the first
            self._client.disconnect()
            if thread is None:
                break
            thread.join(min(0.25, max(0.01, deadline - time.monotonic())))
            if not thread.is_alive():
                break
            if time.monotonic() >= deadline:
                return False
        self._client.loop_stop()
        return True

    # --- helpers ---

    def _publish(self, topic: str, payload: str | bytes, qos: int, retain: bool = False) -> bool:
        if self._client.publish(topic, payload, qos=qos, retain=retain).rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        with self._lock:
            self._unsent += 1
        return True

    def _publish_changes(self, changes: list[tuple[str, str]]) -> None:
        for subtopic, payload in changes:
            self._publish(f"{self.prefix}/{subtopic}", payload, qos=1, retain=True)

    def _device_configs(self) -> list[tuple[str, dict]]:
        return ha.device_configs(
            self.name,
            self.prefix,
            self.cfg.discovery_prefix,
            self._snapshot is not None,
            self._event_frame is not None,
        )

    def _discover(self, slug: str) -> None:
        if self.cfg.ha_discovery:
            for topic, payload in ha.class_configs(self.name, self.prefix, self.cfg.discovery_prefix, slug):
                self._publish(topic, json.dumps(payload), qos=1, retain=True)

    def _send_diagnostics(self, status, now: float) -> None:
        """<prefix>/diagnostics (retained) for the diagnostic sensors: at most every
        DIAGNOSTICS_S, and only when a value (rounded as shown) changed."""
        age = status.last_result_age_s
        values = (None if age is None else round(age, 1), round(status.inference_fps, 1))
        sent_at, sent = self._diagnostics
        if now - sent_at < DIAGNOSTICS_S or values == sent:
            return
        body = json.dumps({"last_result_age_s": values[0], "inference_fps": values[1]})
        if self._publish(f"{self.prefix}/diagnostics", body, qos=1, retain=True):
            self._diagnostics = (now, values)

    # --- an earlier run's retained topics (in the mqtt thread) ---

    def _start_sweep(self) -> None:
        """Subscribe to this streamer's own discovery configs and class states: what comes
        back retained is what an earlier run left (mosquitto sends it before our own)."""
        self._sweep_until = time.monotonic() + SWEEP_S
        self._client.on_message = self._on_retained
        self._client.subscribe([(topic, 1) for topic in self._sweep_filters])

    def _end_sweep(self, now: float) -> None:
        if self._sweep_until is not None and self._swept >= 0 and now > self._sweep_until:
            self._swept = -1  # ended
            self._client.unsubscribe(self._sweep_filters)

    def _on_retained(self, client, userdata, message) -> None:
        """Take on or remove what an earlier run left: bounded in time and in count."""
        if not message.retain or not message.payload or self._closing.is_set():
            return  # our own messages come back unretained; an empty one is a removal
        if self._sweep_until is None or time.monotonic() > self._sweep_until or not 0 <= self._swept < SWEEP_MAX:
            return
        self._swept += 1
        topic = message.topic
        head, _, rest = topic.partition(self.prefix + "/")
        slug, _, leaf = rest.partition("/")
        state_of = slug if not head and slug and leaf == "detected" else None  # <prefix>/<slug>/detected
        slug = state_of or ha.class_of_config(topic, self.name, self.cfg.discovery_prefix)
        with self._lock:
            known = slug is not None and self._classes.knows(slug)
            adopted = slug is not None and not known and self._classes.adopt(slug)
        if adopted:
            log.info("MQTT: class %s from an earlier run keeps its topics", slug)
            self._discover(slug)
            self._publish_changes([(f"{slug}/count", "0"), (f"{slug}/detected", OFF)])
        if known or adopted:
            if state_of is None and not self.cfg.ha_discovery:
                self._remove(topic)  # discovery is off now: the entity goes
            return
        if slug is not None:  # a class this run will not publish: its states and entities go
            for leaf in ("detected", "count"):
                self._remove(f"{self.prefix}/{slug}/{leaf}")
            for config, _ in ha.class_configs(self.name, self.prefix, self.cfg.discovery_prefix, slug):
                self._remove(config)
        elif not self.cfg.ha_discovery or topic not in {t for t, _ in self._device_configs()}:
            self._remove(topic)  # an entity of the device this run does not have (a camera, an old sensor)

    def _remove(self, topic: str) -> None:
        log.debug("MQTT: removing the retained %s left by an earlier run", topic)
        self._publish(topic, b"", qos=1, retain=True)

    # --- images (in the mqtt-snapshot thread) ---

    def _image_loop(self) -> None:
        """The event snapshot as soon as a class turns ON, and the newest annotated frame at
        most every snapshot_s seconds; both JPEG, retained."""
        last_id, last_sent = None, float("-inf")
        wait_s = min(1.0, self.cfg.snapshot_s) if self._snapshot is not None else 1.0
        while not self._closing.is_set():
            self._wake.wait(wait_s)
            self._wake.clear()
            if self._closing.is_set():
                return
            with self._lock:
                event, self._event = self._event, None
            if event is not None and self._connected.is_set():
                self._publish_image("event_snapshot", self._event_frame(event))
            if (
                self._snapshot is None
                or not self._connected.is_set()
                or time.monotonic() - last_sent < self.cfg.snapshot_s
            ):
                continue
            frame = self._snapshot()
            if frame is not None and frame.frame_id != last_id and self._publish_image("snapshot", frame):
                last_id, last_sent = frame.frame_id, time.monotonic()

    def _publish_image(self, leaf: str, frame: Frame | None) -> bool:
        """``frame`` as JPEG on <prefix>/<leaf>, retained; False without a frame or if not queued."""
        return frame is not None and self._publish(
            f"{self.prefix}/{leaf}", encode_jpeg(frame.image, SNAPSHOT_QUALITY), qos=0, retain=True
        )
