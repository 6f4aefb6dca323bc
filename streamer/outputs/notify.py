"""Tell systemd (Type=notify) that streamer is ready, still healthy or stopping, over $NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Mapping

from streamer.redact import scrub

log = logging.getLogger(__name__)


def _socket_address(value: str) -> bytes | None:
    """The AF_UNIX address for a NOTIFY_SOCKET value, or None if it is not one we can use.

    systemd writes a filesystem path ("/run/systemd/notify") or an abstract socket with a
    leading "@", which stands for the NUL byte of the real address (see sd_notify(3)).
    """
    if value.startswith("/"):
        return os.fsencode(value)
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    return None


def _watchdog_interval_s(env: Mapping[str, str]) -> float | None:
    """WATCHDOG_USEC in seconds, or None when there is no watchdog for this process.

    Like sd_watchdog_enabled(3): a WATCHDOG_PID naming another process means the watchdog
    is meant for that process (e.g. our parent), not for us.
    """
    usec_text = env.get("WATCHDOG_USEC", "").strip()
    if not usec_text:
        return None
    pid_text = env.get("WATCHDOG_PID", "").strip()
    try:
        usec = int(usec_text)
        pid = int(pid_text) if pid_text else None
    except ValueError:
        log.warning(
            "ignoring the systemd watchdog: WATCHDOG_USEC=%r, WATCHDOG_PID=%r are not numbers", usec_text, pid_text
        )
        return None
    if usec <= 0 or (pid is not None and pid != os.getpid()):
        return None
    return usec / 1_000_000


class SystemdNotifier:
    """sd_notify(3) without libsystemd: one non-blocking AF_UNIX datagram socket.

    Built by ``from_env``.  Without NOTIFY_SOCKET (not started by systemd, or not as
    Type=notify) every method is a cheap no-op.  Sending never raises and never blocks:
    a failure (systemd gone, socket removed, queue full) is logged once at warning, since
    a missed notification must not stop the pipeline.  Safe to call from several threads.
    """

    def __init__(self, address: str | None = None, watchdog_interval_s: float | None = None):
        """address: a NOTIFY_SOCKET value (a path, or "@name" for an abstract socket), or
        None for a disabled notifier; watchdog_interval_s: WatchdogSec= of the unit."""
        self._lock = threading.Lock()
        self.is_ready = False  # True once ready() has been called
        self._warned = False
        self._sock: socket.socket | None = None
        self._where = address
        self._address = _socket_address(address) if address else None
        if address and self._address is None:
            log.warning("ignoring NOTIFY_SOCKET=%r: expected an absolute path or @abstract-name", address)
        if self._address is not None:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # not inherited (PEP 446)
                self._sock.setblocking(False)
            except OSError as exc:
                log.warning("cannot notify systemd: no AF_UNIX datagram socket (%s)", exc)
                self._address = None
        # The unit's WatchdogSec= in seconds, or None when this process has no watchdog: systemd
        # restarts the service if no watchdog() arrives within this time; ping at about half of it.
        # Pings without somewhere to send them are pointless; report no watchdog then.
        self.watchdog_interval_s = watchdog_interval_s if self._address is not None else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> SystemdNotifier:
        """A notifier for NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID as systemd sets them."""
        return cls(env.get("NOTIFY_SOCKET") or None, _watchdog_interval_s(env))

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify (and it has not been closed)."""
        return self._sock is not None

    def ready(self, status: str | None = None) -> None:
        """Send READY=1 (with a STATUS= line when given); only the first call sends."""
        with self._lock:
            if self.is_ready:
                return
            self.is_ready = True
        self._send("READY=1" if status is None else f"READY=1\n{_status_line(status)}")

    def status(self, text: str) -> None:
        """Send STATUS=text, shown by `systemctl status`; secrets are masked, newlines flattened."""
        self._send(_status_line(text))

    def watchdog(self) -> None:
        """Send WATCHDOG=1: streamer is healthy.  A no-op when there is no watchdog."""
        if self.watchdog_interval_s is not None:
            self._send("WATCHDOG=1")

    def stopping(self) -> None:
        """Send STOPPING=1: a shutdown has begun (systemd then expects the exit)."""
        self._send("STOPPING=1")

    def close(self) -> None:
        """Close the socket; later calls of any method do nothing.  Safe to call twice."""
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _send(self, message: str) -> None:
        data = message.encode("utf-8", "replace")
        with self._lock:
            if self._sock is None:  # disabled, or closed
                return
            try:
                self._sock.sendto(data, self._address)
                return
            except OSError as exc:
                if self._warned:
                    return
                self._warned = True
                error = exc
        log.warning(
            "cannot notify systemd at NOTIFY_SOCKET=%s (%s); further failures are not logged", self._where, error
        )


def _status_line(text: str) -> str:
    # One line: a newline in the text would start a new assignment in the datagram
    # (a status ending in "\nREADY=1" would otherwise declare the service ready).
    return "STATUS=" + " ".join(scrub(str(text)).splitlines())
