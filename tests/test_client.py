"""The API client against real local servers: success, every error mapped to its class and
its line, keep-alive, the pool's size, timeouts by phase, proxies from the environment, the
size cap, and no API key in any error or log line.

Connections are counted at the server's side, by a TCP relay in front of the stand-in API
(tests/support/relay.py).  TLS is in test_client_tls.py.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streamer.api.client import MAX_RESPONSE_BYTES, DetectionClient, proxy_for
from streamer.errors import ApiBadRequest, ApiError, ApiFatalError, ApiMalformedResponse, ApiTransientError
from streamer.imaging import prepare_upload
from streamer.sources.synthetic import SyntheticScene
from streamer.standin.server import MAX_BODY_BYTES, ApiServer, Fault
from support.h2_server import ANSWER
from support.proxy import ForwardProxy
from support.relay import TcpRelay

UPLOAD = prepare_upload(SyntheticScene(1280, 720).render(0), 640, 80)
# Sent with every request by client_for; never in an error or a log line.  Not random: it is in
# test ids, which every pytest-xdist worker must collect alike.
KEY = "canary-4f0d2c9e7b3a41e8a6d5c2b1f0e9d8c7"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
# A body the kernel cannot take whole: on Linux a TCP send buffer grows to 4 MiB at most
# (net.ipv4.tcp_wmem), so writing it to a server that does not read stalls for real.
BIG = b"A" * (16 * 1024 * 1024)
WAIT_S = 5.0


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    """Whatever the machine sets, these tests start with no proxy in the environment."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("REQUEST_METHOD", raising=False)  # urllib ignores HTTP_PROXY under CGI


def client_for(url: str, key: str | None = KEY, **kwargs) -> DetectionClient:
    kwargs.setdefault("timeout_s", 5.0)
    kwargs.setdefault("connect_timeout_s", 2.0)
    return DetectionClient(url, "synthetic/1", key, **kwargs)


def raised(kind: type[ApiError], call) -> ApiError:
    """The ApiError call raises; its message, and the traceback a log would show, free of the key."""
    with pytest.raises(kind) as info:
        call()
    exc = info.value
    assert KEY not in str(exc)
    assert KEY not in "".join(traceback.format_exception(exc))
    return exc


def port_of(server: ApiServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


# --- answers and the errors they map to ---


def test_success(api_server):
    with client_for(api_server.url) as client:
        parsed = client.infer(UPLOAD.body)
    assert len(parsed.detections) == 3 and parsed.image_width == 640


@pytest.mark.parametrize(
    "status, fatal_words",
    [
        (401, "API key was refused"),
        (402, "out of credits"),
        (403, "may not use model synthetic/1"),
        (404, "model synthetic/1 was not found"),
        (423, "paused"),
    ],
)
def test_fatal_statuses(api_server, status, fatal_words):
    api_server.set_fault(Fault(status=status, message="nope"))
    with client_for(api_server.url) as client:
        exc = raised(ApiFatalError, lambda: client.infer(UPLOAD.body))
    assert fatal_words in str(exc) and f"({status}: nope)" in str(exc) and exc.exit_code == 2


def test_the_401_line_says_what_to_check(api_server):
    api_server.set_fault(Fault(status=401, message="Unauthorized api_key"))
    with client_for(api_server.url) as client:
        exc = raised(ApiFatalError, lambda: client.infer(UPLOAD.body))
    assert str(exc) == (
        f"the API key was refused by {api_server.url} (401: Unauthorized api_key); "
        "check $ROBOFLOW_API_KEY or api.api_key_file"
    )


MISSING_KEY = (
    "Required Roboflow API key is missing. Visit https://docs.roboflow.com/api-reference/authentication"
    "#retrieve-an-api-key to learn how to retrieve one."
)
FORBIDDEN_KEY = (
    "Unauthorized access to roboflow API - check API key and make sure the key is valid and have required scopes."
)


@pytest.mark.parametrize(
    "status, message, key, expected",
    [
        (400, "Missing api_key", None, "needs an API key and none was sent (400: Missing api_key)"),
        (400, MISSING_KEY, None, "needs an API key and none was sent (400: Required Roboflow API key is missing."),
        (400, "Invalid api_key", KEY, "the API key was refused by"),
        (403, FORBIDDEN_KEY, KEY, "the API key was refused by"),
        (403, "This API key does not exist (or has been revoked).", KEY, "the API key was refused by"),
    ],
)
def test_a_missing_or_refused_key_is_a_configuration_error_whatever_the_status(
    api_server, status, message, key, expected
):
    """A self-hosted server that needs a key answers 400 "Missing api_key": like a 401, exit 2 with the hint."""
    api_server.set_fault(Fault(status=status, message=message))
    with client_for(api_server.url, key=key) as client:
        exc = raised(ApiFatalError, lambda: client.infer(UPLOAD.body))
    assert expected in str(exc) and str(exc).endswith("check $ROBOFLOW_API_KEY or api.api_key_file"), str(exc)
    assert exc.exit_code == 2


@pytest.mark.parametrize(
    "status, message",
    [(400, "Could not decode the image"), (400, "bad request to /synthetic/1?api_key=x"), (403, "quota used up")],
)
def test_other_400s_and_403s_are_not_called_a_key_problem(api_server, status, message):
    api_server.set_fault(Fault(status=status, message=message))
    with client_for(api_server.url) as client:
        exc = raised(ApiError, lambda: client.infer(UPLOAD.body))
    assert "check $ROBOFLOW_API_KEY" not in str(exc), str(exc)
    assert isinstance(exc, ApiBadRequest if status == 400 else ApiFatalError)


@pytest.mark.parametrize(
    "status, retry_after, expected",
    [(503, "1", 1.0), (429, "7", 7.0), (500, None, None), (502, None, None), (504, "soon", None)],
)
def test_transient_statuses_carry_retry_after(api_server, status, retry_after, expected):
    api_server.set_fault(Fault(status=status, retry_after=retry_after, message="busy"))
    with client_for(api_server.url) as client:
        exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
    assert exc.status == status and exc.retry_after_s == expected
    assert str(exc) == f"{api_server.url} answered {status}: busy"


def test_a_redirect_is_a_configuration_error_naming_the_target(api_server):
    api_server.set_fault(Fault(status=301, headers={"Location": "https://elsewhere.example/synthetic/1"}))
    with client_for(api_server.url) as client:
        exc = raised(ApiFatalError, lambda: client.infer(UPLOAD.body))
    assert str(exc).endswith("redirects (301) elsewhere: set --api-url (api.url) to https://elsewhere.example")


def test_400_is_a_bad_request(api_server):
    with client_for(api_server.url) as client:
        exc = raised(ApiBadRequest, lambda: client.infer(b"not base64 at all !!!"))
    assert str(exc) == f"{api_server.url} refused the request (400: Request body is not valid base64)"


def test_a_server_that_echoes_the_key_has_it_masked(api_server):
    api_server.set_fault(Fault(status=400, message=f"bad request to /synthetic/1?api_key={KEY}"))
    with client_for(api_server.url) as client:
        exc = raised(ApiBadRequest, lambda: client.infer(UPLOAD.body))
    assert "api_key=***" in str(exc)


def test_an_answer_before_the_body_was_read_is_reported_not_the_broken_pipe(api_server):
    """The stand-in answers 413 to a body over 20 MB without reading it, and hangs up while the
    client still writes: the client reports that answer, not the failed write; the next request
    goes on a new connection."""
    with client_for(api_server.url) as client:
        exc = raised(ApiBadRequest, lambda: client.infer(b"A" * (MAX_BODY_BYTES + 4 * 1024 * 1024)))
        assert exc.status == 413 and "Request body over 20 MB" in str(exc)
        assert len(client.infer(UPLOAD.body).detections) == 3


@pytest.mark.parametrize("body", [b"<html><body>Bad gateway</body></html>", b"{not json", b'{"predictions": 5}'])
def test_malformed_200(api_server, body):
    api_server.set_fault(Fault(status=200, raw_body=body))
    with client_for(api_server.url) as client:
        raised(ApiMalformedResponse, lambda: client.infer(UPLOAD.body))


# --- keep-alive, and the pool ---


def test_sequential_requests_share_one_connection(api_server):
    with TcpRelay(("127.0.0.1", port_of(api_server))) as relay:
        with client_for(relay.url) as client:
            for _ in range(5):
                assert len(client.infer(UPLOAD.body).detections) == 3
        assert relay.accepted == 1, f"{relay.accepted} connections for 5 sequential requests"
    assert api_server.counts == {200: 5}


def test_api_server_restarted_on_the_same_port(api_server):
    """The kept-alive connection dies with the server: the next request, to the new server,
    goes on a new connection and succeeds (no error for the stale one)."""
    port = port_of(api_server)
    with client_for(api_server.url) as client:
        client.infer(UPLOAD.body)
        api_server.stop()  # shuts the kept-alive connection down, as a dying server does
        with ApiServer("127.0.0.1", port) as again:
            assert len(client.infer(UPLOAD.body).detections) == 3
            assert again.counts == {200: 1}


def test_max_connections_limits_the_requests_outstanding_at_once():
    with ApiServer("127.0.0.1", 0, latency_ms=300) as server, TcpRelay(("127.0.0.1", port_of(server))) as relay:
        results: list = []
        with client_for(relay.url, max_connections=2) as client:
            start = threading.Barrier(4)

            def post() -> None:
                start.wait(WAIT_S)
                try:
                    results.append(len(client.infer(UPLOAD.body).detections))
                except ApiError as exc:  # reported below
                    results.append(exc)

            threads = [threading.Thread(target=post, name=f"test.post{i}", daemon=True) for i in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(WAIT_S * 2)
            assert not any(thread.is_alive() for thread in threads), "a request hung"
        assert results == [3, 3, 3, 3]
        assert server.max_in_flight_seen == 2 and relay.accepted == 2


def test_a_request_that_gets_no_connection_in_time_is_a_pool_timeout(api_server):
    """One connection allowed, held by a request the server answers after 1.5 s: a second
    request waits connect_timeout_s for it, then gives up without being sent."""
    api_server.set_fault(Fault(status=200, raw_body=ANSWER, hang_s=1.5, remaining=1))
    with client_for(api_server.url, max_connections=1, connect_timeout_s=0.3) as client:
        first: list = []
        holder = threading.Thread(
            target=lambda: first.append(client.infer(UPLOAD.body)), name="test.holder", daemon=True
        )
        holder.start()
        try:
            deadline = time.monotonic() + WAIT_S
            while api_server.in_flight < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
        finally:
            holder.join(WAIT_S)
        assert len(first) == 1 and len(first[0].detections) == 2
        assert len(client.infer(UPLOAD.body).detections) == 3  # the connection is free again
    assert (
        exc.kind == "timeout"
        and str(exc) == f"{api_server.url}/synthetic/1 did not answer within its timeout (pool timeout)"
    )
    assert api_server.counts == {200: 2} and api_server.fault_counts == {"fault": 1}


class _AnswerThenDrop(BaseHTTPRequestHandler):
    """Answers the first request on a connection, reads the second whole and hangs up unanswered.
    The server's ``requests`` lists the requests read, by connection."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.server.requests.append(0)
        self.index = len(self.server.requests) - 1

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests[self.index] += 1
        if self.server.requests[self.index] > 1:
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, fmt: str, *args) -> None:
        pass


def test_a_request_the_server_read_then_hung_up_on_is_not_sent_again():
    """The server may have acted on it (and each call may be billed): an error, not a second
    request; the request after it goes on a new connection."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _AnswerThenDrop)
    httpd.requests = []
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    serving = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="test.dropper")
    serving.start()
    try:
        with client_for(url) as client:
            client.infer(UPLOAD.body)
            exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
            assert httpd.requests == [2], "the lost request was sent again"
            assert len(client.infer(UPLOAD.body).detections) == 2
    finally:
        httpd.shutdown()
        serving.join(WAIT_S)
        httpd.server_close()
    assert exc.kind == "unreachable" and str(exc).startswith(f"cannot reach {url}/synthetic/1: ")
    assert httpd.requests == [2, 1]


def test_a_closed_client_refuses_requests_and_sends_nothing(api_server):
    client = client_for(api_server.url)
    client.infer(UPLOAD.body)
    client.close()
    client.close()  # twice is safe
    exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
    assert str(exc) == f"cannot reach {api_server.url}/synthetic/1: the client is closed"
    assert api_server.counts == {200: 1}


# --- timeouts, by phase ---


def test_connect_timeout_when_the_connection_is_never_accepted(unanswered_port):
    with client_for(f"http://127.0.0.1:{unanswered_port}", connect_timeout_s=0.5) as client:
        started = time.monotonic()
        exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
    assert time.monotonic() - started < 3
    assert exc.kind == "timeout"
    assert (
        str(exc) == f"http://127.0.0.1:{unanswered_port}/synthetic/1 did not answer within its timeout "
        "(connect timeout)"
    )


def test_read_timeout_when_the_server_accepts_but_never_answers():
    """The kernel completes the connection into the listener's queue and takes the request;
    nothing ever reads it or answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:
        port = listener.getsockname()[1]
        with client_for(f"http://127.0.0.1:{port}", timeout_s=0.3, connect_timeout_s=2.0) as client:
            exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
    assert exc.kind == "timeout" and str(exc).endswith("did not answer within its timeout (read timeout)")


def test_read_timeout_when_the_api_is_slow_and_the_next_request_works(api_server):
    api_server.set_fault(Fault(status=200, hang_s=1.0, remaining=1))
    with client_for(api_server.url, timeout_s=0.3) as client:
        exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
        assert len(client.infer(UPLOAD.body).detections) == 3
    assert exc.kind == "timeout" and "(read timeout)" in str(exc)


def test_write_timeout_when_the_server_never_reads():
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:  # connects, never reads
        port = listener.getsockname()[1]
        with client_for(f"http://127.0.0.1:{port}", timeout_s=0.3) as client:
            exc = raised(ApiTransientError, lambda: client.infer(BIG))
    assert exc.kind == "timeout" and str(exc).endswith("did not answer within its timeout (write timeout)")


def test_refused_connection_is_transient():
    server = ApiServer("127.0.0.1", 0)
    url = server.url
    server.stop()  # nothing listens there now
    with client_for(url, connect_timeout_s=1) as client:
        exc = raised(ApiTransientError, lambda: client.infer(UPLOAD.body))
    assert exc.kind == "unreachable" and str(exc) == f"cannot reach {url}/synthetic/1: [Errno 111] Connection refused"


# --- proxies from the environment ---


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_a_proxy_from_the_environment_is_used_and_said_once(api_server, monkeypatch, caplog, variable):
    caplog.set_level(logging.DEBUG, logger="streamer")
    with ForwardProxy() as proxy:
        password = f"proxy-pw-{uuid.uuid4().hex[:8]}"
        monkeypatch.setenv(variable, f"http://user:{password}@127.0.0.1:{proxy.port}")
        with client_for(api_server.url) as client:
            for _ in range(2):
                assert len(client.infer(UPLOAD.body).detections) == 3
        assert [(method, target.split("?")[0]) for method, target, _ in proxy.seen] == [
            ("POST", f"{api_server.url}/synthetic/1")
        ] * 2
        assert f"api_key={KEY}" in proxy.seen[0][1]  # the key did go out: its absence below means something
        assert "Proxy-Authorization" in proxy.seen[0][2]
    assert api_server.counts == {200: 2}
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("streamer.api")]
    assert lines == [f"API requests go through the proxy http://user:***@127.0.0.1:{proxy.port} (from the environment)"]
    assert password not in caplog.text and KEY not in "\n".join(lines)


@pytest.mark.parametrize(
    "env, host",
    [
        ({"HTTP_PROXY": "{proxy}", "NO_PROXY": "127.0.0.1"}, "127.0.0.1"),
        ({"http_proxy": "{proxy}", "no_proxy": "example.invalid,localhost"}, "localhost"),
        ({"HTTP_PROXY": "{proxy}", "NO_PROXY": "*"}, "127.0.0.1"),
        ({"HTTP_PROXY": "{proxy}", "NO_PROXY": "LOCALHOST"}, "localhost"),
        ({"HTTPS_PROXY": "{proxy}"}, "127.0.0.1"),  # a proxy for https:// only; the API is http://
    ],
)
def test_no_proxy_for_the_api_means_a_direct_connection_and_no_proxy_line(api_server, monkeypatch, caplog, env, host):
    caplog.set_level(logging.INFO, logger="streamer")
    with ForwardProxy() as proxy:
        for name, value in env.items():
            monkeypatch.setenv(name, value.format(proxy=proxy.url))
        with client_for(f"http://{host}:{port_of(api_server)}") as client:
            assert len(client.infer(UPLOAD.body).detections) == 3
        assert proxy.seen == []
    assert "proxy" not in caplog.text


@pytest.mark.parametrize(
    "env, url, expected",
    [
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
    ],
)
def test_proxy_for(monkeypatch, env, url, expected):
    """The proxy the log line names, for hosts that cannot be reached here; every row is what
    httpx chooses too (the tests above check the two agree on the ones that can)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert proxy_for(url) == expected


# --- the size cap ---


def test_a_response_over_the_cap_is_refused_unread_and_its_connection_dropped(api_server):
    api_server.set_fault(Fault(status=200, raw_body=b" " * (MAX_RESPONSE_BYTES + 1), remaining=1))
    with TcpRelay(("127.0.0.1", port_of(api_server))) as relay:
        with client_for(relay.url) as client:
            exc = raised(ApiMalformedResponse, lambda: client.infer(UPLOAD.body))
            assert len(client.infer(UPLOAD.body).detections) == 3
        assert relay.accepted == 2  # nothing more went over the oversized answer's connection
    assert str(exc) == f"response from {relay.url}/synthetic/1 is larger than 32 MiB; skipped"
