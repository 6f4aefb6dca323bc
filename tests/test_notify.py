"""streamer.outputs.notify: real AF_UNIX datagram sockets stand in for systemd's notification socket."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

import pytest

import streamer.outputs.notify
from streamer.outputs.notify import SystemdNotifier
from streamer.redact import register_secret


class Receiver:
    """A bound AF_UNIX datagram socket, like the one systemd passes as NOTIFY_SOCKET."""

    def __init__(self, address: str):
        self.env_value = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def recv(self, timeout_s: float = 2.0) -> str:
        self.sock.settimeout(timeout_s)
        return self.sock.recv(65536).decode()

    def pending(self) -> list[str]:
        """Everything queued now.  A local datagram is queued before sendto returns, so an
        empty list means nothing was sent (no waiting needed)."""
        self.sock.setblocking(False)
        out = []
        while True:
            try:
                out.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def receiver(tmp_path):
    path = tmp_path / "notify.sock"
    assert len(os.fsencode(path)) < 108, f"AF_UNIX path too long: {path}"
    rx = Receiver(str(path))
    yield rx
    rx.close()


@pytest.fixture
def notifier(receiver):
    n = SystemdNotifier.from_env({"NOTIFY_SOCKET": receiver.env_value, "WATCHDOG_USEC": "60000000"})
    yield n
    n.close()


def test_ready_is_sent_once_with_its_status(receiver, notifier):
    assert notifier.enabled and not notifier.is_ready
    notifier.ready("watching front-door")
    assert receiver.recv() == "READY=1\nSTATUS=watching front-door"
    assert notifier.is_ready
    notifier.ready("again")
    notifier.ready()
    assert receiver.pending() == []


@pytest.mark.parametrize(
    "call, expected",
    [
        (lambda n: n.ready(), "READY=1"),
        (lambda n: n.status("camera reconnecting"), "STATUS=camera reconnecting"),
        (lambda n: n.watchdog(), "WATCHDOG=1"),
        (lambda n: n.stopping(), "STOPPING=1"),
    ],
    ids=["ready", "status", "watchdog", "stopping"],
)
def test_each_method_sends_its_assignment(receiver, notifier, call, expected):
    call(notifier)
    assert receiver.pending() == [expected]


def test_abstract_socket_named_with_at_sign():
    rx = Receiver(f"@streamer-test-{os.getpid()}-{uuid.uuid4().hex}")
    n = SystemdNotifier.from_env({"NOTIFY_SOCKET": rx.env_value})
    try:
        n.ready()
        assert rx.recv() == "READY=1"
    finally:
        n.close()
        rx.close()


def test_status_never_carries_a_secret(receiver, notifier):
    key = f"rf-key-{uuid.uuid4().hex}"
    register_secret(key)
    notifier.status(f"api key {key} refused; camera rtsp://admin:hunter2@10.0.0.7/stream")
    notifier.ready(f"ready with {key}")
    messages = receiver.pending()
    assert messages == [
        "STATUS=api key *** refused; camera rtsp://admin:***@10.0.0.7/stream",
        "READY=1\nSTATUS=ready with ***",
    ]


def test_a_newline_in_a_status_cannot_add_an_assignment(receiver, notifier):
    notifier.status("camera lost\nREADY=1\nMAINPID=1")
    assert receiver.pending() == ["STATUS=camera lost READY=1 MAINPID=1"]
    assert not notifier.is_ready


@pytest.mark.parametrize(
    "env, interval_s",
    [
        ({"WATCHDOG_USEC": "60000000"}, 60.0),
        ({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),  # another process's
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "me"}, None),
    ],
    ids=["usec", "our-pid", "other-pid", "unset", "zero", "garbage", "garbage-pid"],
)
def test_watchdog_interval_from_env(receiver, env, interval_s):
    n = SystemdNotifier.from_env({"NOTIFY_SOCKET": receiver.env_value, **env})
    try:
        assert n.watchdog_interval_s == interval_s
        n.watchdog()
        assert receiver.pending() == ([] if interval_s is None else ["WATCHDOG=1"])
    finally:
        n.close()


def test_from_env_reads_the_process_environment_by_default(receiver, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = SystemdNotifier.from_env()
    try:
        assert (n.enabled, n.watchdog_interval_s) == (True, 30.0)
    finally:
        n.close()


def test_a_vanished_socket_is_logged_once_and_never_raises(tmp_path, caplog):
    rx = Receiver(str(tmp_path / "gone.sock"))
    n = SystemdNotifier.from_env({"NOTIFY_SOCKET": rx.env_value, "WATCHDOG_USEC": "60000000"})
    rx.close()
    os.unlink(rx.env_value)  # systemd went away
    try:
        with caplog.at_level(logging.WARNING, logger="streamer.outputs.notify"):
            n.ready("ready")
            n.watchdog()
            n.status("still here")
            n.stopping()
        assert n.is_ready
        warnings = [r for r in caplog.records if r.name == "streamer.outputs.notify"]
        assert len(warnings) == 1, caplog.text
        assert "gone.sock" in warnings[0].getMessage()
    finally:
        n.close()


def test_a_full_receiver_queue_never_blocks_the_sender(receiver, notifier, caplog):
    """systemd busy: datagrams pile up unread.  A blocking send would hang the pipeline."""
    sent = threading.Event()

    def flood():
        for _ in range(5000):  # far beyond the kernel's queue of unread datagrams
            notifier.watchdog()
        sent.set()

    with caplog.at_level(logging.WARNING, logger="streamer.outputs.notify"):
        worker = threading.Thread(target=flood, name="test.flood", daemon=True)
        worker.start()
        worker.join(timeout=10)
    if worker.is_alive():
        receiver.close()  # unblocks the send (ECONNREFUSED) so the thread can end
        worker.join(timeout=5)
        pytest.fail("watchdog() blocked on a full socket queue")
    assert sent.is_set()
    assert len([r for r in caplog.records if r.name == "streamer.outputs.notify"]) == 1, caplog.text
    assert 0 < len(receiver.pending()) < 5000


@pytest.mark.parametrize(
    "env", [{}, {"NOTIFY_SOCKET": ""}, {"WATCHDOG_USEC": "60000000"}], ids=["unset", "empty", "watchdog-only"]
)
def test_without_notify_socket_everything_is_a_no_op(env, monkeypatch):
    def no_socket(*args, **kwargs):
        raise AssertionError("a disabled notifier must not open a socket")

    monkeypatch.setattr(streamer.outputs.notify.socket, "socket", no_socket)
    n = SystemdNotifier.from_env(env)
    assert not n.enabled
    assert n.watchdog_interval_s is None
    n.ready("ready")
    n.status("status")
    n.watchdog()
    n.stopping()
    n.close()
    n.close()
    assert n.is_ready  # the state is kept, so callers need not care whether systemd listens


def test_an_unusable_notify_socket_value_disables_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="streamer.outputs.notify"):
        n = SystemdNotifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not n.enabled
    assert "NOTIFY_SOCKET" in caplog.text


def test_close_twice_and_nothing_is_sent_after_close(receiver, notifier, caplog):
    notifier.close()
    notifier.close()
    assert not notifier.enabled
    with caplog.at_level(logging.WARNING, logger="streamer.outputs.notify"):
        notifier.ready()
        notifier.watchdog()
    assert receiver.pending() == []
    assert caplog.records == []


def test_streamer_run_tells_systemd_ready_pings_only_while_healthy_and_says_stopping(spawn, tmp_path):
    """`streamer run` under a stand-in for systemd: READY=1 once frames and an answer came,
    WATCHDOG=1 while both keep coming, no pings while the API is gone, STOPPING=1 at the end."""
    import time

    from conftest import clean_env, free_port

    from streamer.standin.server import ApiServer

    receiver = Receiver(str(tmp_path / "notify.sock"))
    port = free_port()
    env = clean_env(NOTIFY_SOCKET=receiver.env_value, WATCHDOG_USEC="2000000")  # a 2 s window
    run = spawn(
        [
            "run",
            "--source",
            "synthetic",
            "--model",
            "synthetic/1",
            "--api-url",
            f"http://127.0.0.1:{port}",
            "--headless",
            "--max-fps",
            "10",
        ],
        env=env,
    )
    seen: list[tuple[float, str]] = []

    def collect(seconds: float, until=lambda: False) -> None:
        """What the service manager is told, for ``seconds`` or until ``until()``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until():
            try:
                seen.append((time.monotonic(), receiver.recv(min(0.1, max(0.01, deadline - time.monotonic())))))
            except TimeoutError:
                pass

    def pings_after_ready() -> int:
        told = [m for _, m in seen]
        return told[told.index("READY=1") :].count("WATCHDOG=1") if "READY=1" in told else 0

    api = None
    try:
        # Frames flow, but the API is not there yet: not ready, no pings, though requests fail.
        def told_status() -> bool:
            return any(m.startswith("STATUS=capture") for _, m in seen)

        collect(10, until=lambda: "requests in a row failed" in run.stderr and told_status())
        assert not any(m.startswith(("READY=1", "WATCHDOG=1")) for _, m in seen), seen
        assert run.popen.poll() is None and "requests in a row failed" in run.stderr, run.stderr
        # but `systemctl status` already shows the truth: frames read, nothing back yet
        statuses = [m for _, m in seen if m.startswith("STATUS=capture")]
        assert statuses and "newest result none yet" in statuses[-1], seen
        api = ApiServer("127.0.0.1", port).start()
        seen.clear()
        collect(10, until=lambda: pings_after_ready() >= 4)
        ready = [m for _, m in seen if m.startswith("READY=1")]
        assert len(ready) == 1, (seen, run.stderr)
        first_ready = next(i for i, (_, m) in enumerate(seen) if m.startswith("READY=1"))
        assert all(m != "WATCHDOG=1" for _, m in seen[:first_ready])  # no ping before READY
        pings = [t for t, m in seen if m == "WATCHDOG=1"]
        assert len(pings) >= 4, seen  # about every 0.5 s
        assert max(b - a for a, b in zip(pings, pings[1:], strict=False)) < 1.5
        api.stop()  # the API is gone: connections refused, nothing answers
        gone = time.monotonic()
        seen.clear()
        collect(4)  # the window is 2 s: pings must stop within it, and not come back
        late_pings = [t - gone for t, m in seen if m == "WATCHDOG=1"]
        # Pings stop at the first failed request (the API failing is unhealthy), at the latest once
        # the window passes; none come back while it is gone.
        assert all(t < 2.5 for t in late_pings), late_pings
        api = ApiServer("127.0.0.1", port).start()
        seen.clear()
        collect(5, until=lambda: any(m == "WATCHDOG=1" for _, m in seen))
        assert any(m == "WATCHDOG=1" for _, m in seen), seen  # and resume with the API
        code, _ = run.terminate()
        collect(0.3)
    finally:
        if api is not None:
            api.stop()
    assert code == 0
    assert any(m == "STOPPING=1" for _, m in seen), seen


def test_the_output_loop_does_not_spin_while_it_may_not_ping(receiver):
    """With a watchdog, a headless loop sleeps until the next ping is due.  Before READY, or
    while unhealthy (here the API is never there), no ping is due: the loop must still sleep,
    not wake every millisecond for one."""
    import threading
    import time

    from conftest import free_port

    from streamer.api.client import DetectionClient
    from streamer.live.dispatch import InferenceSettings
    from streamer.live.pipeline import Outputs, Pipeline
    from streamer.sources.open import SyntheticSource
    from support.waiting import wait_until

    stop = threading.Event()
    notifier = SystemdNotifier(receiver.env_value, watchdog_interval_s=4.0)
    with DetectionClient(f"http://127.0.0.1:{free_port()}", "synthetic/1", None, timeout_s=0.5) as client:
        pipeline = Pipeline(
            SyntheticSource(64, 64, 30.0, stop), client, Outputs(), InferenceSettings(), stop, notifier=notifier
        )
        passes = []
        check_stall = pipeline.capture.check_stall
        pipeline.capture.check_stall = lambda now=None: passes.append(now) or check_stall(now)
        runner = threading.Thread(target=pipeline.run, name="test.pipeline")
        started = time.monotonic()
        runner.start()
        wait_until(lambda: len(passes) >= 3, 10, lambda: f"three passes of the output loop, {len(passes)} made")
        took_s = time.monotonic() - started
        stop.set()
        runner.join(5)
    assert not runner.is_alive()
    assert not notifier.is_ready
    # Two waits between three passes: up to IDLE_WAKE_S (1 s) each; a spinning loop makes them at once.
    assert took_s >= 0.1, f"three passes of the output loop in {took_s:.3f} s"
