"""The ZeroMQ feed's security and delivery: loopback by default, CURVE, keygen, listen, never blocking.

Real PUB and SUB sockets on this machine.  A PUB drops what it sends before a subscription
has arrived (the slow joiner), so every receive test keeps sending until a message arrives
or its deadline passes; every "receives nothing" is checked while another subscriber on the
same feed does receive, so that it cannot pass just because the feed is dead.
"""

from __future__ import annotations

import json
import logging
import stat
import threading
import time

import pytest
import zmq
from conftest import free_port

from streamer.config import load, zmq_endpoint_is_local
from streamer.errors import ConfigError, UsageError
from streamer.outputs import curve
from streamer.outputs.zmq_feed import ZmqPublisher

PAYLOAD = json.dumps({"type": "detections", "predictions": []}).encode()


def endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture
def publishers():
    made: list[ZmqPublisher] = []

    def make(*args, **kwargs) -> ZmqPublisher:
        pub = ZmqPublisher(*args, **kwargs)
        made.append(pub)
        return pub

    yield make
    for pub in made:
        pub.close()
    assert not [t for t in threading.enumerate() if t.name == "zmq-auth"], "the ZAP thread outlived close()"


def pump(pub: ZmqPublisher, sub, timeout_s: float = 10.0) -> list[bytes] | None:
    """Send until sub receives a message (the subscription may still be on its way) or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pub.send(PAYLOAD)
        msg = sub.recv(0.05)
        if msg is not None:
            return msg
    return None


def pump_both(pub: ZmqPublisher, good, bad, after_s: float = 1.0) -> tuple[list[bytes] | None, list[bytes] | None]:
    """Send until good receives, then for after_s more; what each of them got first."""
    got_good = pump(pub, good)
    deadline = time.monotonic() + after_s
    while time.monotonic() < deadline:
        pub.send(PAYLOAD)
        time.sleep(0.02)
    return got_good, bad.recv(0.2)


@pytest.fixture
def server_pair(tmp_path):
    public, secret = curve.create_pair(tmp_path / "keys", "server")
    keys = zmq.auth.load_certificate(secret)
    return public, secret, keys


def client_of(server_public_file, pair: tuple[bytes, bytes] | None = None) -> tuple[bytes, bytes, bytes]:
    public, secret = pair or zmq.curve_keypair()
    return zmq.auth.load_certificate(server_public_file)[0], public, secret


# --- where the feed may bind ---


@pytest.mark.parametrize(
    "endpoint_, local",
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://127.0.0.53:5555", True),
        ("tcp://localhost:5555", True),
        ("ipc:///tmp/streamer-feed", True),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://*:5555", False),
        ("tcp://192.168.1.20:5555", False),
        ("tcp://eth0:5555", False),
        ("tcp://camera-box.local:5555", False),
    ],
)
def test_which_endpoints_are_local(endpoint_, local):
    assert zmq_endpoint_is_local(endpoint_) is local


@pytest.mark.parametrize("yaml_value", ["5555", '"5555"'])
def test_a_bare_port_is_loopback_in_the_file_and_on_the_command_line(tmp_path, yaml_value):
    path = tmp_path / "c.yaml"
    path.write_text(f"output:\n  zmq: {yaml_value}\n")
    assert load(path, env={}).output.zmq == "tcp://127.0.0.1:5555"
    assert load(None, {"output.zmq": "5555"}, env={}).output.zmq == "tcp://127.0.0.1:5555"


def test_a_feed_on_a_bare_port_is_bound_to_loopback(publishers, subscriber):
    port = free_port()
    pub = publishers(load(None, {"output.zmq": str(port)}, env={}).output.zmq)
    assert pub._sock.getsockopt(zmq.LAST_ENDPOINT).decode() == f"tcp://127.0.0.1:{port}"
    assert pump(pub, subscriber(f"tcp://127.0.0.1:{port}")) == [b"detections", PAYLOAD]


def test_a_network_bind_is_refused_without_allow_remote(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output:\n  zmq: tcp://0.0.0.0:5555\n")
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    message = str(info.value)
    assert message.startswith("output.zmq: tcp://0.0.0.0:5555") and "\n" not in message
    assert "output.zmq_allow_remote: true" in message and "CURVE" in message
    for where in ("tcp://*:5555", "tcp://eth0:5555"):
        with pytest.raises(ConfigError, match="output.zmq_allow_remote"):
            load(None, {"output.zmq": where}, env={})


def test_an_allowed_network_bind_warns_that_anyone_can_read_it(tmp_path, publishers, subscriber, caplog):
    port = free_port()
    path = tmp_path / "c.yaml"
    path.write_text(f"output:\n  zmq: tcp://0.0.0.0:{port}\n  zmq_allow_remote: true\n")
    out = load(path, env={}).output
    with caplog.at_level(logging.INFO, logger="streamer"):
        pub = publishers(out.zmq, out.zmq_topic)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "NOT encrypted" in warnings[0] and "anyone on the network" in warnings[0]
    assert pump(pub, subscriber(f"tcp://127.0.0.1:{port}")) is not None


def test_an_allowed_network_bind_with_curve_says_it_is_encrypted(server_pair, publishers, caplog):
    _, secret_file, _ = server_pair
    with caplog.at_level(logging.INFO, logger="streamer"):
        publishers(f"tcp://0.0.0.0:{free_port()}", curve_secret_key_file=str(secret_file))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "encrypted with CURVE" in warnings[0] and "NOT" not in warnings[0]


def test_a_loopback_feed_logs_no_warning(publishers, caplog):
    with caplog.at_level(logging.INFO, logger="streamer"):
        publishers(endpoint())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("not encrypted" in r.getMessage() for r in caplog.records)


# --- CURVE ---


def test_curve_feed_reaches_only_subscribers_with_the_server_key(server_pair, publishers, subscriber):
    public_file, secret_file, _ = server_pair
    where = endpoint()
    pub = publishers(where, curve_secret_key_file=str(secret_file))
    good = subscriber(where, curve=client_of(public_file))
    plain = subscriber(where)
    wrong = subscriber(where, curve=(zmq.curve_keypair()[0], *zmq.curve_keypair()))
    got, plain_got = pump_both(pub, good, plain)
    assert got == [b"detections", PAYLOAD]
    assert plain_got is None
    assert wrong.recv(0.2) is None


def test_a_clients_dir_admits_only_listed_clients(tmp_path, server_pair, publishers, subscriber, caplog):
    public_file, secret_file, _ = server_pair
    clients = tmp_path / "clients"
    allowed_public, allowed_secret = curve.create_pair(tmp_path / "cam-keys", "alice")
    clients.mkdir()
    (clients / "alice.key").write_bytes(allowed_public.read_bytes())
    where = endpoint()
    with caplog.at_level(logging.INFO, logger="streamer"):
        pub = publishers(where, curve_secret_key_file=str(secret_file), curve_clients_dir=str(clients))
    assert "only the 1 client(s)" in caplog.text
    assert [t for t in threading.enumerate() if t.name == "zmq-auth"]
    alice = subscriber(where, curve=client_of(public_file, zmq.auth.load_certificate(allowed_secret)))
    stranger = subscriber(where, curve=client_of(public_file))  # knows the server key, but is not listed
    got, stranger_got = pump_both(pub, alice, stranger)
    assert got == [b"detections", PAYLOAD]
    assert stranger_got is None


@pytest.mark.parametrize(
    "setup, key, words",
    [
        ("missing-secret", "output.zmq_curve_secret_key_file", "not found"),
        ("public-as-secret", "output.zmq_curve_secret_key_file", "holds only a public key"),
        ("garbage-secret", "output.zmq_curve_secret_key_file", "is not a CURVE certificate"),
        ("folder-as-secret", "output.zmq_curve_secret_key_file", "is a folder"),
        ("missing-clients", "output.zmq_curve_clients_dir", "not found"),
        ("empty-clients", "output.zmq_curve_clients_dir", "holds no client certificates"),
        ("bad-client", "output.zmq_curve_clients_dir", "is not a CURVE certificate"),
    ],
)
def test_bad_key_files_are_one_line_naming_the_key_and_file(tmp_path, server_pair, setup, key, words):
    public_file, secret_file, _ = server_pair
    secret, clients, named = str(secret_file), None, str(secret_file)
    if setup == "missing-secret":
        secret = named = str(tmp_path / "nope.key_secret")
    elif setup == "public-as-secret":
        secret = named = str(public_file)
    elif setup == "garbage-secret":
        bad = tmp_path / "bad.key_secret"
        bad.write_text('curve\n    public-key = "short"\n    secret-key = "also-short-but-secret"\n')
        secret = named = str(bad)
    elif setup == "folder-as-secret":
        secret = named = str(tmp_path)
    elif setup == "missing-clients":
        clients = named = str(tmp_path / "no-such-folder")
    else:
        folder = tmp_path / "clients"
        folder.mkdir()
        if setup == "bad-client":
            (folder / "bob.key").write_text("not a certificate\n")
            named = str(folder / "bob.key")
        else:
            named = str(folder)
        clients = str(folder)
    with pytest.raises(ConfigError) as info:
        ZmqPublisher(endpoint(), curve_secret_key_file=secret, curve_clients_dir=clients)
    message = str(info.value)
    assert message.startswith(key + ":") and named in message and words in message and "\n" not in message
    assert info.value.exit_code == 2
    assert "also-short-but-secret" not in message


def test_the_secret_key_never_reaches_a_log_or_an_error(tmp_path, server_pair, publishers, subscriber, caplog):
    public_file, secret_file, (_, server_secret) = server_pair
    client_public, client_secret = curve.create_pair(tmp_path / "c", "alice")
    clients = tmp_path / "clients"
    clients.mkdir()
    (clients / "alice.key").write_bytes(client_public.read_bytes())
    secret_file.chmod(0o644)  # provokes the "readable by other users" warning, which names the file
    where = endpoint()
    with caplog.at_level(logging.DEBUG):
        pub = publishers(where, curve_secret_key_file=str(secret_file), curve_clients_dir=str(clients))
        alice = subscriber(where, curve=client_of(public_file, zmq.auth.load_certificate(client_secret)))
        assert pump(pub, alice) is not None
        with pytest.raises(UsageError) as busy:  # the port is taken: an error with the key file loaded
            ZmqPublisher(where, curve_secret_key_file=str(secret_file), curve_clients_dir=str(clients))
        mixed_up = tmp_path / "mixed-up"  # a secret certificate where only public ones belong
        mixed_up.mkdir()
        (mixed_up / "server.key").write_bytes(secret_file.read_bytes())
        assert curve.check_clients(mixed_up, "output.zmq_curve_clients_dir") == 1
    # The logs did run, down to the ZAP handler's debug lines.
    assert "chmod 600" in caplog.text and "holds a secret key too" in caplog.text and "ALLOWED" in caplog.text
    texts = [caplog.text, str(busy.value)]
    for secret in (server_secret.decode(), zmq.auth.load_certificate(client_secret)[1].decode()):
        assert len(secret) == 40
        assert not [text for text in texts if secret in text]


def test_close_twice_is_safe_and_a_closed_publisher_drops(server_pair, tmp_path, publishers):
    public, secret_file, _ = server_pair
    clients = tmp_path / "clients"
    clients.mkdir()
    (clients / "server.key").write_bytes(public.read_bytes())
    pub = publishers(endpoint(), curve_secret_key_file=str(secret_file), curve_clients_dir=str(clients))
    pub.close()
    pub.close()
    assert pub.send(PAYLOAD) is False
    assert not [t for t in threading.enumerate() if t.name == "zmq-auth"]


def test_send_takes_another_topic(publishers, subscriber):
    where = endpoint()
    pub = publishers(where)
    status = subscriber(where, topic=b"status")
    deadline = time.monotonic() + 10
    got = None
    while got is None and time.monotonic() < deadline:
        pub.send(PAYLOAD)  # on "detections": filtered out by this subscriber
        pub.send(b"{}", topic="status")
        got = status.recv(0.05)
    assert got == [b"status", b"{}"]
    assert pub.send(b"{}", topic=b"status") is True
    with pytest.raises(TypeError, match="topic"):
        pub.send(b"{}", topic=3)


@pytest.mark.parametrize("reader", ["absent", "not reading"])
def test_a_burst_of_sends_never_blocks(publishers, reader):
    where = endpoint()
    pub = publishers(where, sndhwm=1)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 1)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        if reader == "not reading":  # subscribed for sure, then never reads again
            sub.connect(where)
            deadline = time.monotonic() + 10
            while not sub.poll(50) and time.monotonic() < deadline:
                pub.send(b"hello")
            assert sub.poll(0), "the subscription never arrived"
        big = b"x" * 1_000_000
        results: list[bool] = []
        sender = threading.Thread(
            target=lambda: results.extend(pub.send(big) for _ in range(500)), name="test.sender", daemon=True
        )
        sender.start()
        sender.join(30)  # 500 MB could never fit in the buffers: a blocking send would hang here
        assert not sender.is_alive(), "send blocked"
        # PUB drops silently what a subscriber at its high-water mark cannot take: no error.
        assert results == [True] * 500
    finally:
        sub.close(0)
        ctx.term()


# --- keygen and listen, as a user runs them ---


def test_keygen_writes_a_pair_with_a_private_secret(spawn, tmp_path):
    proc = spawn(["keygen", "keys", "--name", "cam1"])
    assert proc.wait(20) == 0, proc.stderr
    public, secret = tmp_path / "keys" / "cam1.key", tmp_path / "keys" / "cam1.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert not stat.S_IMODE(public.stat().st_mode) & 0o022
    public_key, secret_key = zmq.auth.load_certificate(secret)
    assert zmq.auth.load_certificate(public) == (public_key, None)
    assert str(secret.relative_to(tmp_path)) in proc.stdout and "--server-key" in proc.stdout
    assert secret_key.decode() not in proc.stdout + proc.stderr
    again = spawn(["keygen", "keys", "--name", "cam1"], name="again")
    assert again.wait(20) == 2
    assert again.stderr.strip().splitlines()[-1].startswith("error: keygen: ") and "already exists" in again.stderr
    assert zmq.auth.load_certificate(secret) == (public_key, secret_key)  # not overwritten


def test_listen_with_the_server_key_prints_the_encrypted_feed(server_pair, publishers, spawn, tmp_path):
    public_file, secret_file, _ = server_pair
    where = endpoint()
    pub = publishers(where, curve_secret_key_file=str(secret_file))
    listener = spawn(["listen", "--connect", where, "--server-key", str(public_file), "--count", "1"], name="listen")
    deadline = time.monotonic() + 20
    while listener.popen.poll() is None and time.monotonic() < deadline:
        pub.send(PAYLOAD)
        time.sleep(0.05)
    assert listener.wait(5) == 0, listener.stderr
    assert json.loads(listener.stdout.splitlines()[0]) == json.loads(PAYLOAD)


def test_listen_as_a_listed_client_and_says_why_a_stranger_gets_nothing(tmp_path, server_pair, publishers, spawn):
    public_file, secret_file, _ = server_pair
    alice_public, alice_secret = curve.create_pair(tmp_path / "alice", "alice")
    clients = tmp_path / "clients"
    clients.mkdir()
    (clients / "alice.key").write_bytes(alice_public.read_bytes())
    where = endpoint()
    pub = publishers(where, curve_secret_key_file=str(secret_file), curve_clients_dir=str(clients))
    alice = spawn(
        [
            "listen",
            "--connect",
            where,
            "--server-key",
            str(public_file),
            "--client-key",
            str(alice_secret),
            "--count",
            "1",
            "--log-level",
            "debug",
        ],
        name="alice",
    )
    stranger = spawn(["listen", "--connect", where, "--server-key", str(public_file)], name="stranger")
    deadline = time.monotonic() + 20
    while (
        alice.popen.poll() is None or "refused this client's key" not in stranger.stderr
    ) and time.monotonic() < deadline:
        pub.send(PAYLOAD)
        time.sleep(0.05)
    assert alice.wait(5) == 0, alice.stderr
    assert json.loads(alice.stdout) == json.loads(PAYLOAD)
    assert zmq.auth.load_certificate(alice_secret)[1].decode() not in alice.stderr
    assert "refused this client's key" in stranger.stderr and stranger.stdout == ""
    assert stranger.terminate()[0] == 0


def test_listen_with_a_wrong_server_key_says_so(tmp_path, server_pair, publishers, spawn):
    _, secret_file, _ = server_pair
    other_public, _ = curve.create_pair(tmp_path / "other", "other")
    where = endpoint()
    pub = publishers(where, curve_secret_key_file=str(secret_file))
    listener = spawn(["listen", "--connect", where, "--server-key", str(other_public)], name="listen")
    deadline = time.monotonic() + 20
    while "not its public key" not in listener.stderr and time.monotonic() < deadline:
        pub.send(PAYLOAD)
        time.sleep(0.05)
    assert "--server-key is probably not its public key" in listener.stderr
    assert listener.stdout == ""
    assert listener.terminate()[0] == 0


@pytest.mark.parametrize(
    "args, words",
    [
        (["--server-key", "missing.key"], "error: --server-key: missing.key not found"),
        (
            ["--server-key", "keys/server.key", "--client-key", "keys/server.key"],
            "error: --client-key: keys/server.key holds only a public key",
        ),
        (["--client-key", "keys/server.key_secret"], "error: --client-key: needs --server-key"),
    ],
)
def test_listen_refuses_bad_key_files_with_one_line(server_pair, spawn, args, words):
    proc = spawn(["listen", "--connect", endpoint(), *args])
    assert proc.wait(20) == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(words), proc.stderr
