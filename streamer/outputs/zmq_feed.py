"""The ZeroMQ PUB feed: two frames per message, the topic then the UTF-8 JSON."""

from __future__ import annotations

import logging
import threading

import zmq
from zmq.auth.base import Authenticator
from zmq.auth.thread import ThreadAuthenticator

from streamer.config import zmq_endpoint_is_local
from streamer.errors import ConfigError, UsageError
from streamer.outputs import curve
from streamer.threads import set_os_thread_name
from streamer.types import Delivery

log = logging.getLogger(__name__)


class ZmqPublisher:
    """A PUB socket that never blocks the pipeline: bounded queue, non-blocking send, linger 0.

    With ``curve_secret_key_file`` the feed is encrypted with CURVE; with ``curve_clients_dir``
    too, only the clients whose public certificates (*.key) are in that folder at start may
    connect.  ``send`` and ``close`` may be called from several threads."""

    def __init__(
        self,
        endpoint: str,
        topic: str = "detections",
        sndhwm: int = 100,
        *,
        status_topic: str = "status",
        curve_secret_key_file: str | None = None,
        curve_clients_dir: str | None = None,
    ):
        self.endpoint = endpoint
        self.topic = _topic_bytes(topic)
        self.status_topic = _topic_bytes(status_topic)
        self.dropped = 0
        self.output_name = "zmq"
        self._lock = threading.Lock()  # a ZeroMQ socket must not be used by two threads at once
        self._auth: ThreadAuthenticator | None = None
        keys, clients = _curve_keys(curve_secret_key_file, curve_clients_dir)
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUB)
        try:
            self._sock.setsockopt(zmq.SNDHWM, sndhwm)
            self._sock.setsockopt(zmq.LINGER, 0)
            if keys:
                if curve_clients_dir:
                    self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger(__name__ + ".auth"))
                    self._auth.start()
                    self._auth.thread.name = "zmq-auth"
                    set_os_thread_name(self._auth.thread)
                    self._auth.configure_curve(domain="*", location=str(curve_clients_dir))
                self._sock.curve_publickey, self._sock.curve_secretkey = keys
                self._sock.curve_server = True
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise UsageError(
                f"output.zmq: cannot bind {endpoint}: {exc}; choose another port or stop the program using it"
            ) from None
        except BaseException:
            self.close()
            raise
        _announce(endpoint, topic, keys, curve_clients_dir, clients)

    def send(self, payload: bytes, topic: bytes | str | None = None) -> bool:
        """Queue one message (topic, payload); False if it was dropped or the publisher is closed.

        ``topic`` defaults to the configured one; another one (e.g. for status messages) lets
        subscribers pick by prefix."""
        frame = self.topic if topic is None else _topic_bytes(topic)
        with self._lock:
            if self._sock is None:
                return False
            try:
                self._sock.send_multipart([frame, payload], flags=zmq.NOBLOCK)
                return True
            except zmq.Again:  # not expected: PUB itself drops silently for a subscriber at its HWM
                self.dropped += 1
                return False

    def deliver(self, delivery: Delivery) -> None:
        self.send(delivery.payload, self.status_topic if delivery.kind == "status" else None)

    def close(self, timeout_s: float = 1.0) -> bool:
        """Close the socket, stop the authenticator and the context; safe to call again."""
        with self._lock:
            sock, self._sock = self._sock, None
            auth, self._auth = self._auth, None
            ctx, self._ctx = self._ctx, None
        if sock is not None:
            sock.close(linger=0)
        if auth is not None and auth.pipe is not None:
            # ThreadAuthenticator.stop() joins its thread without a timeout: do the same
            # steps with one.  The thread exits on the TERMINATE message.
            auth.pipe.send(b"TERMINATE")
            auth.thread.join(timeout_s)
            if auth.thread.is_alive():
                return False  # its context stays: term() would wait for its sockets
            auth.pipe.close(linger=0)
            auth.pipe = None
            Authenticator.stop(auth)  # closes its ZAP socket, as ThreadAuthenticator.stop() does last
        if ctx is not None:
            ctx.term()
        return True


def _curve_keys(secret_key_file: str | None, clients_dir: str | None) -> tuple[tuple[bytes, bytes] | None, int]:
    """The feed's CURVE key pair (None: not encrypted), and how many clients are admitted."""
    keys = None
    if secret_key_file:
        if not zmq.has("curve"):
            raise ConfigError(
                "output.zmq_curve_secret_key_file: this libzmq was built without CURVE; "
                "install the pyzmq wheel (it bundles libzmq with CURVE) or set it to null"
            )
        keys = curve.read_secret(secret_key_file, "output.zmq_curve_secret_key_file", ConfigError)
    # load() has refused a clients_dir without a secret key file
    return keys, curve.check_clients(clients_dir, "output.zmq_curve_clients_dir", ConfigError) if clients_dir else 0


def _announce(endpoint: str, topic: str, keys, clients_dir: str | None, clients: int) -> None:
    """Say where the feed is, how it is protected, and warn when other machines can reach it."""
    security = (
        "not encrypted"
        if not keys
        else f"CURVE, only the {clients} client(s) in {clients_dir}"
        if clients_dir
        else "CURVE, any client with the public key"
    )
    log.info("publishing detections on %s (topic %r, %s)", endpoint, topic, security)
    if keys:
        log.info("CURVE public key of this feed: %s", keys[0].decode("ascii"))
    if not zmq_endpoint_is_local(endpoint):
        if not keys:
            log.warning(
                "the feed on %s is NOT encrypted: anyone on the network can read it; set "
                "output.zmq_curve_secret_key_file to encrypt it with CURVE",
                endpoint,
            )
        else:
            log.warning(
                "the feed on %s is reachable from other machines, encrypted with CURVE; %s may read it",
                endpoint,
                f"only the clients in {clients_dir}" if clients_dir else "any client holding the server's public key",
            )


def _topic_bytes(topic: bytes | str) -> bytes:
    if isinstance(topic, bytes):
        return topic
    if isinstance(topic, str):
        return topic.encode("utf-8")
    raise TypeError(f"topic: expected bytes or str, got {type(topic).__name__}")
