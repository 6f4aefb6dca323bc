"""A ZeroMQ subscriber for the bench scripts: collects detections and heartbeats on a thread."""

from __future__ import annotations

import json
import threading
import time

import zmq


class Feed:
    """Collects detections and heartbeats on a thread; answers 'first message after t'."""

    def __init__(self, endpoint: str):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.detections: list[dict] = []
        self.heartbeats: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(100):
                continue
            topic, payload = self.sock.recv_multipart()
            message = json.loads(payload)
            with self._lock:
                (self.detections if message["type"] == "detections" else self.heartbeats).append(message)

    def wait_for(self, field: str, since: float, timeout_s: float) -> dict | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                recent = self.detections[-500:]
            found = next((m for m in recent if m[field] >= since), None)
            if found is not None:
                return found
            time.sleep(0.02)
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close(0)
        self.ctx.term()
