"""A real mosquitto broker for tests, and a paho subscriber that records what it receives.

    broker = Broker(folder, tls=(ca_cert, cert, key)).start()   # broker.port, broker.tls_port
    broker.kill(); broker.start()                                 # the same ports again
    with Recorder(broker, "streamer/#") as sub: ...               # sub.messages, sub.wait_for(...)

The broker listens on 127.0.0.1 only, refuses anonymous clients (user USER, password PASSWORD
in a password file made by mosquitto_passwd) and keeps nothing on disk (persistence false).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from support.ports import free_port

USER, PASSWORD = "cam", "s3cret-broker-pw"


def tools_available() -> str | None:
    """None if mosquitto and mosquitto_passwd are installed, else what is missing."""
    missing = [tool for tool in ("mosquitto", "mosquitto_passwd") if not _which(tool)]
    return ", ".join(missing) or None


def _which(tool: str) -> str | None:
    return shutil.which(tool) or next(
        (str(Path(d) / tool) for d in ("/usr/sbin", "/sbin") if (Path(d) / tool).exists()), None
    )


class Broker:
    def __init__(self, folder: Path, tls: tuple[Path, Path, Path] | None = None):
        self.folder = folder
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.log_path = folder / "mosquitto.log"
        self._proc: subprocess.Popen | None = None
        passwords = folder / "passwd"
        subprocess.run(
            [_which("mosquitto_passwd"), "-c", "-b", str(passwords), USER, PASSWORD],
            check=True,
            capture_output=True,
            timeout=30,
        )
        lines = [
            "per_listener_settings false",
            "persistence false",
            "allow_anonymous false",
            f"password_file {passwords}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            f"listener {self.port} 127.0.0.1",
        ]
        if os.geteuid() == 0:
            lines.insert(0, "user root")  # as root mosquitto would switch to a user who cannot read folder
        if tls:
            ca, cert, key = tls
            lines += [f"listener {self.tls_port} 127.0.0.1", f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout_s: float = 10.0) -> Broker:
        log = open(self.log_path, "ab")
        self._proc = subprocess.Popen([_which("mosquitto"), "-c", str(self.conf)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout_s} s")

    @property
    def url(self) -> str:
        return f"mqtt://{USER}@127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(10)
        self._proc = None

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._proc = None


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    at: float  # time.time() when it arrived


class Recorder:
    """A paho subscriber on its own network thread; every wait has a deadline."""

    def __init__(self, broker: Broker, topic: str | list[str] = "#", protocol: int = mqtt.MQTTv311, qos: int = 2):
        topics = [(t, qos) for t in ([topic] if isinstance(topic, str) else topic)]
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol)
        self.client.username_pw_set(USER, PASSWORD)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topics)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError("the test subscriber could not subscribe within 10 s")

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append(Message(msg.topic, msg.payload, msg.qos, bool(msg.retain), time.time()))

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, condition, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if condition(list(self.messages)):
                    return True
            time.sleep(0.05)
        with self._lock:
            return bool(condition(list(self.messages)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
