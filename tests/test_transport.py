"""The pooled HTTP/1.1 transport (streamer/transport.py) through DetectionClient, against
real servers on 127.0.0.1: keep-alive, stale connections, sending a request at most once, early
answers, the Host header, cut bodies, framings http.server never sends, timeouts, the
connection limit, TLS, proxies, the size cap.

Connections are counted server-side: tests/support/origin.py's Origin records every accepted
connection and the requests read on it (headers, and how much of the body); its TcpRelay
counts the ones made to ApiServer.  Every error a test provokes is checked for the canary API
key (see ``raised``).
"""

from __future__ import annotations

import shutil
import socket
import struct
import threading
import time
import traceback
import uuid

import pytest
from conftest import need
from support import tls
from support.origin import ANSWER, WAIT_S, Origin, RawOrigin, TcpRelay
from support.proxy import ForwardProxy

from streamer.api import transport
from streamer.api.client import DetectionClient
from streamer.errors import (
    ApiBadRequest,
    ApiError,
    ApiFatalError,
    ApiMalformedResponse,
    ApiTransientError,
)
from streamer.live.imaging import prepare_upload
from streamer.standin.server import ApiServer
from streamer.sources.synthetic import SyntheticScene
from streamer.api.transport import proxy_for

UPLOAD = prepare_upload(SyntheticScene(1280, 720).render(0), 640, 80)
KEY = f"canary-{uuid.uuid4().hex}"  # sent with every request; must never show in an error
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
# A body the kernel cannot take whole: on Linux a TCP send buffer grows to 4 MiB at most
# (net.ipv4.tcp_wmem), and a server that does not read keeps its receive window small; so a
# server that stops reading, or hangs up, makes writing this fail or stall for real.
BIG = b"A" * (16 * 1024 * 1024)
HTTPS = pytest.param("https", marks=pytest.mark.system)  # the certificate is made with openssl


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    """Whatever the machine sets, these tests start with no proxy in the environment."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("REQUEST_METHOD", raising=False)  # urllib ignores HTTP_PROXY under CGI


@pytest.fixture
def origin():
    """Start Origin servers (tests/support/origin.py); all stopped at the end."""
    started: list[Origin] = []

    def make(rule=None, **kwargs) -> Origin:
        server = Origin(rule, **kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def serve(origin, request, monkeypatch):
    """serve(scheme, rule): an Origin over http, or over https with its certificate trusted."""

    def make(scheme: str, rule=None, **kwargs) -> Origin:
        if scheme == "https":
            cert, key = request.getfixturevalue("certificate")
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))
            monkeypatch.delenv("SSL_CERT_DIR", raising=False)
            kwargs["tls"] = tls.server_context(cert, key)
        return origin(rule, **kwargs)

    return make


def client_for(url: str, **kwargs) -> DetectionClient:
    kwargs.setdefault("timeout_s", 5.0)
    kwargs.setdefault("connect_timeout_s", 2.0)
    return DetectionClient(url, "synthetic/1", KEY, **kwargs)


def raised(kind: type[ApiError], call) -> ApiError:
    """The ApiError call raises; its message, and the traceback a log would show, free of the key."""
    with pytest.raises(kind) as info:
        call()
    exc = info.value
    assert KEY not in str(exc)
    assert KEY not in "".join(traceback.format_exception(exc))
    return exc


def in_thread(call, timeout_s: float = WAIT_S):
    """call() on another thread: its result, or what it raised; a failure if it has not ended
    within timeout_s (a hang)."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # noqa: BLE001  (handed to the caller, whatever it is)
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="test.call", daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"the call did not end within {timeout_s} s"
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


# --- 1. keep-alive ---

def test_sequential_requests_to_the_api_server_share_one_connection(api_server):
    with TcpRelay(("127.0.0.1", int(api_server.url.rsplit(":", 1)[1]))) as relay:
        with client_for(relay.url) as client:
            assert client.backend == "pool"
            for _ in range(4):
                assert len(client.infer(UPLOAD.body).predictions) == 3
        assert relay.accepted == 1, f"{relay.accepted} connections for 4 sequential requests"


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_sequential_requests_share_one_connection(origin, framing):
    server = origin(framing=framing)
    with client_for(server.url) as client:
        for _ in range(4):
            client.infer(UPLOAD.body)
    assert server.requests_per_connection() == [4]
    assert f"api_key={KEY}" in server.paths[0]  # the canary did go out, so its absence below means something


# --- 2. stale keep-alive connections, and a request sent at most once ---

def send(client: DetectionClient, kind: str):
    """One request: "body" an upload, "no body" an image URL (its request is the headers alone,
    written in one go: nothing fails while writing it, so only the idle check can save it)."""
    if kind == "body":
        return client.infer(UPLOAD.body)
    return client.infer_url("https://images.example/frame.jpg")


@pytest.mark.parametrize("kind", ["body", "no body"])
def test_a_connection_the_server_closed_while_idle_is_replaced(origin, kind):
    """The poll in _Connection.reusable sees the server's FIN on the idle connection."""
    server = origin()
    with client_for(server.url) as client:
        send(client, kind)
        assert server.close_idle(), "the server's idle connection did not end"
        assert len(send(client, kind).predictions) == 2
    assert server.requests_per_connection() == [1, 1]
    assert all(seen.whole for seen in server.seen)


def test_connection_close_from_the_server_is_honoured(origin):
    server = origin(lambda conn, nth: "ok-close" if nth == 1 else "ok")  # every 2nd answer says close
    with client_for(server.url) as client:
        for _ in range(5):
            client.infer(UPLOAD.body)
    assert server.requests_per_connection() == [2, 2, 1]


@pytest.mark.parametrize("kind", ["body", "no body"])
def test_a_server_that_hangs_up_after_each_answer_without_saying_so(origin, kind):
    """Each hang-up is seen by the idle check, as long as it arrived before the next request:
    the test waits for it (a request written before it arrives cannot be sent again)."""
    server = origin(lambda conn, nth: "ok-drop")
    with client_for(server.url) as client:
        for _ in range(3):
            send(client, kind)
            assert server.wait_closed(), "the server did not hang up"
    assert server.requests_per_connection() == [1, 1, 1]


def test_api_server_restarted_on_the_same_port(api_server):
    port = int(api_server.url.rsplit(":", 1)[1])
    with client_for(api_server.url) as client:
        client.infer(UPLOAD.body)
        api_server.stop()  # shuts the kept-alive connection down, as a dying server does
        with ApiServer("127.0.0.1", port) as again:
            assert len(client.infer(UPLOAD.body).predictions) == 3
            assert again.counts == {200: 1}


def test_idle_connection_past_the_keepalive_expiry_is_not_reused(origin, monkeypatch):
    monkeypatch.setattr(transport, "KEEPALIVE_EXPIRY_S", 0.05)
    server = origin()
    with client_for(server.url) as client:
        client.infer(UPLOAD.body)
        time.sleep(0.15)
        client.infer(UPLOAD.body)
    assert server.requests_per_connection() == [1, 1]


@pytest.mark.parametrize("loss", ["drop", "reset"])
def test_a_request_read_on_a_reused_connection_then_lost_is_not_sent_again(origin, loss):
    """The server read the whole request, then hung up (FIN or RST) without answering: it may
    have acted on it, so it is an error, not a second request."""
    server = origin(lambda conn, nth: loss if (conn, nth) == (0, 1) else "ok")
    with client_for(server.url) as client:
        client.infer(UPLOAD.body)
        exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
        assert "cannot reach" in str(exc) and exc.kind == "unreachable"
        assert server.requests_per_connection() == [2], "the lost request was sent again"
        assert server.seen[1].whole
        assert len(client.infer(UPLOAD.body).predictions) == 2  # the next one goes on a new connection
    assert server.requests_per_connection() == [2, 1]


@pytest.mark.parametrize("scheme", ["http", HTTPS])
def test_a_request_that_could_not_be_written_on_a_reused_connection_goes_once_more_on_a_new_one(serve, scheme):
    """The server reset the kept-alive connection after the headers, while the body was still
    being written: the server never had the request whole, so it is sent once more."""
    server = serve(scheme, lambda conn, nth: "early-reset" if (conn, nth) == (0, 1) else "ok")
    with client_for(server.url) as client:
        client.infer(UPLOAD.body)
        assert len(client.infer(BIG).predictions) == 2
    assert server.requests_per_connection() == [2, 1]
    assert [(seen.conn, seen.whole) for seen in server.seen] == [(0, True), (0, False), (1, True)]
    assert server.seen[1].body_read == 0 and server.seen[2].body_read == len(BIG)


@pytest.mark.parametrize("scheme", ["http", HTTPS])
def test_the_retry_on_a_new_connection_happens_once(serve, scheme):
    server = serve(scheme, lambda conn, nth: "ok" if (conn, nth) == (0, 0) else "early-reset")
    with client_for(server.url) as client:
        client.infer(UPLOAD.body)
        exc = raised(ApiTransientError, lambda: client.infer(BIG))
    assert "cannot reach" in str(exc) and exc.kind == "unreachable"
    assert server.requests_per_connection() == [2, 1]
    assert [seen.whole for seen in server.seen] == [True, False, False]


def test_a_request_that_could_not_be_written_on_a_new_connection_is_not_retried(origin):
    server = origin(lambda conn, nth: "early-reset")
    with client_for(server.url) as client:
        exc = raised(ApiTransientError, lambda: client.infer(BIG))
    assert "cannot reach" in str(exc)
    assert server.requests_per_connection() == [1]


def test_a_new_connection_dropped_after_the_request_is_not_retried(origin):
    server = origin(lambda conn, nth: "drop")  # the server may have acted on it: not sent twice
    with client_for(server.url) as client:
        raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
    assert server.requests_per_connection() == [1]


# --- 3. an answer before the whole body was sent ---

@pytest.mark.parametrize("scheme", ["http", HTTPS])
@pytest.mark.parametrize("connection", ["new", "reused"])
@pytest.mark.parametrize("status", [401, 413])
def test_an_answer_before_the_body_was_read_is_reported_not_the_broken_pipe(serve, scheme, connection, status):
    """The server answers after the headers and hangs up while the client is still writing the
    body: the client reports that answer, not the failed write."""
    early = 0 if connection == "new" else 1
    server = serve(scheme, lambda conn, nth: f"early-{status}" if (conn, nth) == (0, early) else "ok")
    with client_for(server.url) as client:
        if connection == "reused":
            client.infer(UPLOAD.body)
        if status == 401:
            exc = raised(ApiFatalError, lambda: client.infer(BIG))
            assert "API key was refused" in str(exc) and "Invalid API key" in str(exc)
        else:
            exc = raised(ApiBadRequest, lambda: client.infer(BIG))
            assert "413" in str(exc) and "Payload too large" in str(exc)
        assert exc.status == status
        assert server.seen[early].body_read == 0  # it did answer before reading the body
        assert len(client.infer(UPLOAD.body).predictions) == 2  # and the next request has a new connection
    assert server.requests_per_connection() == [early + 1, 1]


# --- 4. the Host header ---

@pytest.mark.parametrize("url, host", [
    ("https://api.example", "api.example"),
    ("https://api.example:443", "api.example"),
    ("http://api.example", "api.example"),
    ("http://api.example:80", "api.example"),
    ("https://api.example:8443", "api.example:8443"),
    ("https://api.example:80", "api.example:80"),
    ("http://api.example:443", "api.example:443"),
    ("http://127.0.0.1:9001", "127.0.0.1:9001"),
    ("http://[::1]", "[::1]"),
    ("https://[::1]:8443", "[::1]:8443"),
])
def test_the_host_header_names_the_port_unless_it_is_the_schemes(url, host):
    """What the pool's connection would write (no network), for ports that cannot be listened on here."""
    pool = transport.ConnectionPool(url, connect_timeout_s=1.0, timeout_s=1.0, max_connections=1, headers={})
    head = pool._new().head("POST", "/synthetic/1", {}).decode("latin-1")
    assert [line for line in head.split("\r\n") if line.lower().startswith("host:")] == [f"Host: {host}"]


@pytest.mark.parametrize("scheme", ["http", HTTPS])
@pytest.mark.parametrize("port", ["default", "other"])
def test_the_host_header_a_server_receives(serve, scheme, port):
    """Port 80/443 need root (or may be taken): skipped then, the test above covers them."""
    default = {"http": 80, "https": 443}[scheme]
    try:
        server = serve(scheme, port=default if port == "default" else 0)
    except OSError as exc:
        pytest.skip(f"cannot listen on 127.0.0.1:{default} here ({exc})")
    with client_for(server.url) as client:
        client.infer(UPLOAD.body)
    expected = "127.0.0.1" if port == "default" else f"127.0.0.1:{server.port}"
    assert server.seen[0].headers["Host"] == expected


# --- 5. answers cut short or malformed ---

@pytest.mark.parametrize("cut", ["short", "short-chunked"])  # a Content-Length body, or a chunked one
def test_a_body_cut_short_is_transient_not_a_parsed_answer(origin, cut):
    server = origin(lambda conn, nth: cut if conn == 0 else "ok")
    with client_for(server.url) as client:
        exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
        assert "cannot reach" in str(exc) and exc.kind == "unreachable"
        assert len(client.infer(UPLOAD.body).predictions) == 2
    assert server.requests_per_connection() == [1, 1]


@pytest.mark.parametrize("length", ["bad-length", "long-length"])
def test_a_content_length_int_cannot_read_is_an_api_error(origin, length):
    """ "Content-Length: ²" passes str.isdigit() but not int(), nor do 5000 digits (Python's
    int() limit is 4300): an ApiError (here the body read to the hang-up is not JSON), never a
    ValueError."""
    server = origin(lambda conn, nth: length if conn == 0 else "ok")
    with client_for(server.url) as client:
        raised(ApiError, lambda: client.infer(UPLOAD.body))
        assert len(client.infer(UPLOAD.body).predictions) == 2
    assert server.requests_per_connection() == [1, 1]


def test_an_informational_answer_is_passed_over_and_the_connection_kept(origin):
    """A 103 Early Hints before the 200 is passed over, as httpx does (RFC 9110 asks a client
    to read 1xx answers and go on): the 200 after it is the answer."""
    server = origin(lambda conn, nth: "103")
    with client_for(server.url) as client:
        for _ in range(2):
            assert len(client.infer(UPLOAD.body).predictions) == 2
    assert server.requests_per_connection() == [2]


# --- 6. TLS ---

@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    need(shutil.which("openssl") is not None, "openssl is not installed: the TLS tests make their certificate with it")
    return tls.self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def issued(tmp_path_factory):
    """Certificates signed by a test CA (ca): out of date both ways, and for another name."""
    need(shutil.which("openssl") is not None, "openssl is not installed: the TLS tests make their certificates with it")
    folder = tmp_path_factory.mktemp("ca")
    ca = tls.authority(folder)
    return {
        "ca": ca,
        "expired": tls.issued(folder, ca, "expired", not_before="20000101000000Z", not_after="20010101000000Z"),
        "not-yet-valid": tls.issued(folder, ca, "not-yet-valid", not_before="20990101000000Z",
                                    not_after="21000101000000Z"),
        "another-name": tls.issued(folder, ca, "another-name", san="DNS:example.invalid"),
    }


@pytest.fixture
def tls_origin(origin, certificate):
    return origin(tls=tls.server_context(*certificate))


@pytest.mark.system
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_https_verified_against_ssl_cert_file(tls_origin, certificate, monkeypatch, host):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    with client_for(f"https://{host}:{tls_origin.port}") as client:
        assert client.backend == "pool"
        assert len(client.infer(UPLOAD.body).predictions) == 2
    assert tls_origin.requests_per_connection() == [1]


@pytest.mark.system
def test_https_keeps_the_connection_alive(tls_origin, certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    with client_for(tls_origin.url) as client:
        for _ in range(3):
            client.infer(UPLOAD.body)
    assert tls_origin.requests_per_connection() == [3]


@pytest.mark.system
@pytest.mark.parametrize("roots", ["certifi", "another CA in SSL_CERT_FILE"])
def test_https_with_an_untrusted_certificate_names_ssl_cert_file(tls_origin, issued, monkeypatch, roots):
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    if roots == "certifi":
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    else:
        monkeypatch.setenv("SSL_CERT_FILE", str(issued["ca"][0]))  # a CA that did not sign the server's
    with client_for(tls_origin.url) as client:
        assert client.backend == "pool"
        exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
    assert "certificate is not trusted" in str(exc) and "SSL_CERT_FILE" in str(exc)
    assert tls_origin.paths == []  # nothing was sent over the unverified connection


@pytest.mark.system
@pytest.mark.parametrize("which", ["expired", "not-yet-valid"])
def test_a_certificate_out_of_its_dates_points_at_the_clock(origin, issued, monkeypatch, which):
    monkeypatch.setenv("SSL_CERT_FILE", str(issued["ca"][0]))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    server = origin(tls=tls.server_context(*issued[which]))
    with client_for(server.url) as client:
        exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
    assert "certificate" in str(exc) and "clock" in str(exc), str(exc)
    assert server.paths == []


@pytest.mark.system
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])  # an IP address mismatch, a host name one
def test_a_certificate_for_another_name_says_so(origin, issued, monkeypatch, host):
    monkeypatch.setenv("SSL_CERT_FILE", str(issued["ca"][0]))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    server = origin(tls=tls.server_context(*issued["another-name"]))
    with client_for(f"https://{host}:{server.port}") as client:
        exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
    assert "certificate is for another name" in str(exc), str(exc)
    assert server.paths == []


@pytest.mark.system
@pytest.mark.parametrize("rule", ["ok-drop", "drop", "reset"])
def test_https_connections_the_server_hangs_up(tls_origin, certificate, monkeypatch, rule):
    """ok-drop: hangs up after each answer (a TCP FIN, no close_notify), seen while idle.
    drop/reset: hangs up on the 2nd request of a connection after reading it, unanswered: an
    error, not a second request; the request after it goes on a new connection."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    tls_origin.rule = lambda conn, nth: rule if rule == "ok-drop" or nth else "ok"
    outcomes = []
    with client_for(tls_origin.url) as client:
        for _ in range(3):
            try:
                outcomes.append(len(client.infer(UPLOAD.body).predictions))
            except ApiTransientError as exc:
                assert "cannot reach" in str(exc) and KEY not in str(exc)
                outcomes.append("lost")
            if rule == "ok-drop":
                assert tls_origin.wait_closed(), "the server did not hang up"
    if rule == "ok-drop":
        assert outcomes == [2, 2, 2] and tls_origin.requests_per_connection() == [1, 1, 1]
    else:
        assert outcomes == [2, "lost", 2] and tls_origin.requests_per_connection() == [2, 1]


def test_a_stalled_tls_handshake_is_a_connect_timeout():
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:  # accepts TCP, never speaks TLS
        port = listener.getsockname()[1]
        with client_for(f"https://127.0.0.1:{port}", connect_timeout_s=0.5) as client:
            exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
    assert exc.kind == "timeout" and "connect timeout" in str(exc)


def test_a_tls_handshake_reset_by_the_server_is_transient():
    """The server accepts, then resets the connection (an RST) before the handshake is done."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:
        listener.settimeout(WAIT_S)

        def reset_one() -> None:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

        resetter = threading.Thread(target=reset_one, name="test.reset", daemon=True)
        resetter.start()
        with client_for(f"https://127.0.0.1:{listener.getsockname()[1]}") as client:
            exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
        resetter.join(WAIT_S)
    assert "cannot reach" in str(exc)


# --- 7. proxies ---

@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_a_proxy_from_the_environment_is_used_through_httpx(api_server, monkeypatch, caplog, variable):
    caplog.set_level("INFO", logger="streamer.api.client")
    with ForwardProxy() as proxy:
        password = f"proxy-pw-{uuid.uuid4().hex[:8]}"
        monkeypatch.setenv(variable, f"http://user:{password}@127.0.0.1:{proxy.port}")
        with client_for(api_server.url) as client:
            assert client.backend == "httpx"
            assert len(client.infer(UPLOAD.body).predictions) == 3
        assert [(method, target.split("?")[0]) for method, target, _ in proxy.seen] == [
            ("POST", f"{api_server.url}/synthetic/1")]
        assert "Proxy-Authorization" in proxy.seen[0][2]
    assert api_server.counts == {200: 1}
    assert "through the proxy" in caplog.text and password not in caplog.text


@pytest.mark.parametrize("env", [
    {"HTTP_PROXY": "{proxy}", "NO_PROXY": "127.0.0.1"},
    {"http_proxy": "{proxy}", "no_proxy": "localhost,127.0.0.1"},
    {"HTTP_PROXY": "{proxy}", "NO_PROXY": "*"},
    {"HTTPS_PROXY": "{proxy}"},  # a proxy for https:// only; the API is http://
])
def test_no_proxy_for_the_api_means_a_direct_pooled_connection(api_server, monkeypatch, env):
    with ForwardProxy() as proxy:
        for name, value in env.items():
            monkeypatch.setenv(name, value.format(proxy=proxy.url))
        with client_for(api_server.url) as client:
            assert client.backend == "pool"
            assert len(client.infer(UPLOAD.body).predictions) == 3
        assert proxy.seen == []


@pytest.mark.parametrize("env, url, expected", [
    ({}, "http://api.example:9001", None),
    ({"HTTP_PROXY": "http://p:3128"}, "http://api.example:9001", "http://p:3128"),
    ({"http_proxy": "http://p:3128"}, "http://api.example", "http://p:3128"),
    ({"HTTP_PROXY": "http://p:3128"}, "https://api.example", None),
    ({"HTTPS_PROXY": "http://p:3128"}, "https://api.example", "http://p:3128"),
    ({"HTTPS_PROXY": "http://p:3128"}, "http://api.example", None),
    ({"ALL_PROXY": "http://p:3128"}, "https://api.example", "http://p:3128"),
    ({"ALL_PROXY": "http://all:1", "HTTP_PROXY": "http://p:3128"}, "http://api.example", "http://p:3128"),
    ({"HTTP_PROXY": "http://p:3128", "NO_PROXY": "127.0.0.1"}, "http://127.0.0.1:9001", None),
    ({"HTTP_PROXY": "http://p:3128", "NO_PROXY": "127.0.0.1"}, "http://10.0.0.1:9001", "http://p:3128"),
    ({"HTTP_PROXY": "http://p:3128", "NO_PROXY": "example.com"}, "http://api.example.com", None),
    ({"HTTP_PROXY": "http://p:3128", "NO_PROXY": ".example.com"}, "http://api.example.com:80", None),
    ({"HTTP_PROXY": "http://p:3128", "NO_PROXY": "example.com"}, "http://notexample.com", "http://p:3128"),
    ({"HTTP_PROXY": "http://p:3128", "NO_PROXY": "other, localhost"}, "http://localhost:9001", None),
    ({"HTTP_PROXY": "http://p:3128", "NO_PROXY": "*"}, "http://anything.example", None),
    ({"HTTP_PROXY": "http://p:3128", "no_proxy": "API.Example"}, "http://api.example", None),
])
def test_proxy_for(monkeypatch, env, url, expected):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert proxy_for(url) == expected


# --- 8. timeouts ---

@pytest.fixture
def unanswered_port():
    """A port whose connection attempts go unanswered: a listener that never accepts, its accept
    queue filled, so the kernel drops further SYNs (Linux; skipped where that does not happen)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    address = listener.getsockname()
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):
            filler = socket.socket()
            fillers.append(filler)
            filler.settimeout(0.2)
            try:
                filler.connect(address)
            except TimeoutError:
                break
        else:
            pytest.skip("connections past a full accept queue still complete here: cannot provoke a connect timeout")
        yield address[1]
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_connect_timeout(unanswered_port):
    with client_for(f"http://127.0.0.1:{unanswered_port}", connect_timeout_s=0.5) as client:
        exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
    assert exc.kind == "timeout" and "connect timeout" in str(exc)


def test_write_timeout_when_the_connection_is_never_accepted():
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:  # connects, never reads
        port = listener.getsockname()[1]
        with client_for(f"http://127.0.0.1:{port}", timeout_s=0.3) as client:
            exc = raised(ApiTransientError, lambda: client.infer(BIG))
    assert exc.kind == "timeout" and "write timeout" in str(exc)


def test_write_timeout_when_the_server_stops_reading(origin):
    server = origin(lambda conn, nth: "stop-reading")
    with client_for(server.url, timeout_s=0.5) as client:
        exc = raised(ApiTransientError, lambda: client.infer(BIG))
    assert exc.kind == "timeout" and "write timeout" in str(exc)
    assert 0 < server.seen[0].body_read < len(BIG)


def test_the_write_timeout_is_on_each_step_of_progress_not_the_whole_upload(origin):
    """The server reads BIG 256 KiB at a time with a pause between: the upload takes well over
    timeout_s, each step far less.  (The server must read quickly enough that what the kernel
    still holds once the last write returns, up to ~4 MiB, reaches it within the read timeout.)"""
    server = origin(lambda conn, nth: "slow-read")
    with client_for(server.url, timeout_s=1.0) as client:
        assert len(client.infer(BIG).predictions) == 2
    (seen,) = server.seen
    assert seen.whole
    assert seen.read_s > 1.0, "the upload was not slower than the timeout: the test proves nothing"


@pytest.mark.parametrize("stall", ["stall", "stall-body"])  # before the headers, or halfway through the body
def test_read_timeout_and_the_connection_is_not_reused(origin, stall):
    server = origin(lambda conn, nth: stall if conn == 0 else "ok")
    with client_for(server.url, timeout_s=0.3) as client:
        exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
        assert exc.kind == "timeout" and "read timeout" in str(exc)
        server.release.set()
        assert len(client.infer(UPLOAD.body).predictions) == 2
    assert server.requests_per_connection() == [1, 1]


# --- 9. the connection limit, and closing ---

def test_max_connections_limits_the_connections_open_at_once(origin):
    server = origin(lambda conn, nth: "slow")  # each answer takes SLOW_S: the 4 requests overlap
    results: list = []
    with client_for(server.url, max_connections=2) as client:
        start = threading.Barrier(4)

        def post() -> None:
            start.wait(WAIT_S)
            try:
                results.append(len(client.infer(UPLOAD.body).predictions))
            except ApiError as exc:  # reported below
                results.append(exc)

        threads = [threading.Thread(target=post, name=f"test.post{i}", daemon=True) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_S * 2)
        assert not any(thread.is_alive() for thread in threads), "a request hung"
    assert results == [2, 2, 2, 2]
    assert server.max_open <= 2, f"{server.max_open} connections open at once"
    assert server.max_in_flight <= 2
    assert sum(server.requests_per_connection()) == 4 and len(server.requests_per_connection()) <= 2


def test_a_request_that_gets_no_connection_in_time_is_a_pool_timeout(origin):
    """One connection allowed, held by a request the server answers slowly but steadily (so it
    never times out itself): a second request waits timeout_s for it, then gives up."""
    server = origin(lambda conn, nth: "drip" if (conn, nth) == (0, 0) else "ok")
    with client_for(server.url, max_connections=1, timeout_s=0.5) as client:
        first: list = []
        holder = threading.Thread(target=lambda: first.append(client.infer(UPLOAD.body)), name="test.holder",
                                  daemon=True)
        holder.start()
        try:
            assert server.wait_requests(1), "the first request did not arrive"
            exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
            assert len(server.seen) == 1  # the second one was never sent
        finally:
            server.release.set()  # the drip ends: the first request gets its answer
            holder.join(WAIT_S)
        assert len(first) == 1 and len(first[0].predictions) == 2
        assert len(client.infer(UPLOAD.body).predictions) == 2  # the connection is free again
    assert exc.kind == "timeout" and "pool timeout" in str(exc)
    assert server.requests_per_connection() == [2]


@pytest.mark.parametrize("backend", ["pool", "httpx"])
def test_a_closed_client_refuses_requests_and_sends_nothing(origin, monkeypatch, backend):
    server = origin()
    with ForwardProxy() as proxy:
        if backend == "httpx":
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
        client = client_for(server.url)
        assert client.backend == backend
        client.infer(UPLOAD.body)
        client.close()
        exc = raised(ApiTransientError, lambda: in_thread(lambda: client.infer(UPLOAD.body)))
        assert len(proxy.seen) == (1 if backend == "httpx" else 0)
    assert "cannot reach" in str(exc) or "closed" in str(exc)
    assert len(server.seen) == 1


def test_closing_the_client_during_a_request_lets_it_finish_then_closes_its_connection(origin):
    server = origin(lambda conn, nth: "slow")
    client = client_for(server.url)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(client.infer(UPLOAD.body)), name="test.worker",
                              daemon=True)
    worker.start()
    try:
        assert server.wait_requests(1), "the request did not arrive"
        client.close()
    finally:
        worker.join(WAIT_S)
    assert len(result) == 1 and len(result[0].predictions) == 2
    assert server.wait_closed(), "the connection given back after close() was kept open"


# --- 10. the response size cap ---

@pytest.mark.parametrize("huge", ["huge", "huge-chunked"])  # a declared Content-Length, or none
def test_a_response_over_the_cap_is_refused_and_its_connection_dropped(origin, huge):
    server = origin(lambda conn, nth: huge if (conn, nth) == (0, 1) else "ok")
    with client_for(server.url) as client:
        client.infer(UPLOAD.body)
        exc = raised(ApiMalformedResponse, lambda: client.infer(UPLOAD.body))
        assert "larger than 32 MiB" in str(exc)
        assert len(client.infer(UPLOAD.body).predictions) == 2
    assert server.requests_per_connection() == [2, 1]  # nothing more went over the oversized answer's connection


# --- URLs ---

@pytest.mark.parametrize("url", ["http://[::1]", "https://[::1]"])
def test_an_ipv6_literal_without_a_port_is_connected_to_not_looked_up(url):
    """A bare "::1" with no port must not be read as host ":" port 1 (http.client's reading); the
    pool passes the default port itself.  Nothing listens on [::1]:80/443 here, so any error but a failed
    name lookup (for ":") is right."""
    with client_for(url, connect_timeout_s=0.5) as client:
        try:
            client.infer(UPLOAD.body)
        except ApiError as exc:
            assert KEY not in str(exc)
            assert not isinstance(exc.__context__, socket.gaierror), str(exc)


# --- 9. answers framed as http.server never frames them ---

def _answer(head: str, body: bytes = ANSWER) -> bytes:
    return head.replace("{n}", str(len(body))).encode("latin-1") + body


def _chunked(body: bytes) -> bytes:
    """body in two chunks, the first with a chunk extension, and a trailer after the last."""
    half = len(body) // 2
    return (b"%x;name=value\r\n" % half + body[:half] + b"\r\n" + b"%X\r\n" % (len(body) - half)
            + body[half:] + b"\r\n0\r\nX-Trailer: yes\r\n\r\n")


@pytest.mark.parametrize("name, answer, per_connection", [
    ("CRLF, Content-Length", _answer("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n"), [2]),
    ("LF-only lines", _answer("HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Length: {n}\n\n"), [2]),
    ("header names in any case", _answer("HTTP/1.1 200 OK\r\ncontent-LENGTH: {n}\r\n\r\n"), [2]),
    ("a folded header", _answer("HTTP/1.1 200 OK\r\nX-Note: one\r\n two\r\nContent-Length: {n}\r\n\r\n"), [2]),
    ("100 Continue first", b"HTTP/1.1 100 Continue\r\n\r\n"
     + _answer("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n"), [2]),
    ("chunked, extension and trailer", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(ANSWER),
     [2]),
    ("HTTP/1.0 without keep-alive", _answer("HTTP/1.0 200 OK\r\nContent-Length: {n}\r\n\r\n"), [1, 1]),
    ("Connection: close", _answer("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {n}\r\n\r\n"), [1, 1]),
    ("bytes past the body", _answer("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n") + b"junk", [1, 1]),
    ("chunked and a Content-Length", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
     + _chunked(ANSWER), [1, 1]),
])
def test_answers_in_every_framing_are_read_and_reused_only_when_safe(name, answer, per_connection):
    """Each answer is read whole and parsed; its connection is used again only when the framing
    says the answer ended where it should and the server keeps it open."""
    with RawOrigin([answer, answer]) as server, client_for(server.url) as client:  # the server never hangs up
        for _ in range(2):
            assert len(client.infer(UPLOAD.body).predictions) == 2
    assert server.per_connection == per_connection


def test_a_body_that_ends_when_the_server_hangs_up_is_read_to_the_end():
    """No Content-Length and not chunked: the body is what comes before the hang-up."""
    with RawOrigin([(b"HTTP/1.1 200 OK\r\n\r\n" + ANSWER, "close")]) as server, client_for(server.url) as client:
        assert len(client.infer(UPLOAD.body).predictions) == 2


@pytest.mark.parametrize("answer, words", [
    (b"HELLO\r\n\r\n", "HELLO"),
    (b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 2000"),
    (b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 099"),
    (b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * (70 * 1024) + b"\r\n\r\n", "answer head"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "cannot reach"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcdeXY0\r\n\r\n", "cannot reach"),
])
def test_a_broken_status_line_head_or_chunk_is_a_transient_error(answer, words):
    with RawOrigin([(answer, "close")]) as server, client_for(server.url) as client:
        exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
        assert words in str(exc) and str(server.port) in str(exc)


def test_retry_after_is_read_whatever_the_case_of_its_name():
    answer = _answer("HTTP/1.1 503 Busy\r\nretry-AFTER: 7\r\nContent-Length: {n}\r\n\r\n", b'{"message": "busy"}')
    with RawOrigin([answer]) as server, client_for(server.url) as client:
        exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
        assert exc.status == 503 and exc.retry_after_s == 7 and "busy" in str(exc)


@pytest.mark.parametrize("name, answer", [
    ("a long chunk extension", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"%x;name=\"%s\"\r\n" % (len(ANSWER), b"v" * 200) + ANSWER + b"\r\n0\r\n\r\n"),
    ("LF-only lines ending in CRLF", _answer("HTTP/1.1 200 OK\nContent-Length: {n}\n\r\n")),
    ("103 Early Hints first", b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
     + _answer("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n")),
    ("a Content-Length list of one value", _answer("HTTP/1.1 200 OK\r\nContent-Length: {n}, {n}\r\n\r\n")),
    ("Chunked in another case", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n" + _chunked(ANSWER)),
])
def test_more_framings_are_read_and_the_connection_kept(name, answer):
    with RawOrigin([answer, answer]) as server, client_for(server.url) as client:
        for _ in range(2):
            assert len(client.infer(UPLOAD.body).predictions) == 2
    assert server.per_connection == [2]


def test_close_on_a_second_connection_line_is_honoured():
    """A repeated Connection header is one list ("keep-alive, close"): the connection is not reused."""
    answer = _answer("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: {n}\r\n\r\n")
    with RawOrigin([answer, answer]) as server, client_for(server.url) as client:  # the server never hangs up
        for _ in range(2):
            assert len(client.infer(UPLOAD.body).predictions) == 2
    assert server.per_connection == [1, 1]


def test_a_204_has_no_body_whatever_its_headers_say():
    """Reading stops at its head (a chunked body would never come: a read timeout), and the
    connection is kept."""
    answer = b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"
    with RawOrigin([answer, answer]) as server, client_for(server.url, timeout_s=2.0) as client:
        for _ in range(2):
            assert "204" in str(raised(ApiBadRequest, lambda: client.infer(UPLOAD.body)))
    assert server.per_connection == [2]


@pytest.mark.parametrize("answer, words", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi", "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n" + b"X-T: aaaaaaaaaa\r\n" * 5000,
     "trailers"),
    (b"HTTP/1.1 100 Continue\r\n\r\n" * 11 + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "informational"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n" + _chunked(ANSWER), "Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + _chunked(ANSWER), "Transfer-Encoding"),
])
def test_an_answer_that_breaks_the_framing_rules_is_refused(answer, words):
    """Two different Content-Lengths, trailers past 64 KiB, more than 10 informational answers
    and a transfer coding other than chunked alone are errors, not guesses."""
    with RawOrigin([(answer, "close")]) as server, client_for(server.url) as client, pytest.raises(ApiError) as info:
        client.infer(UPLOAD.body)
    assert words in str(info.value)


def test_a_header_line_that_starts_with_a_space_after_the_status_line_is_ignored():
    """RFC 9112 2.2: such a line is ignored, not read as a header.  Read as one, this
    Content-Length would cut the answer to 2 bytes; ignored, the body runs to the hang-up."""
    answer = b"HTTP/1.1 200 OK\r\n Content-Length: 2\r\n\r\n" + ANSWER
    with RawOrigin([(answer, "close")]) as server, client_for(server.url) as client:
        assert len(client.infer(UPLOAD.body).predictions) == 2


def test_a_frame_uses_the_confidence_set_after_the_client_was_made(origin):
    """A frame's query is worked out once and kept, but not past a change of confidence."""
    server = origin()
    with client_for(server.url) as client:
        client.infer(UPLOAD.body)
        client.confidence = 0.9
        client.infer(UPLOAD.body)
    assert ["confidence=0.4" in seen.path for seen in server.seen] == [True, False]
    assert "confidence=0.9" in server.seen[1].path
