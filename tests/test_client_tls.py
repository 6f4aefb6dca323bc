"""The API client over TLS, HTTP/1.1 and HTTP/2, against real servers on 127.0.0.1 whose
certificates a test CA signed (tests/support/tls.py makes them with openssl): the roots it
trusts (certifi's, or SSL_CERT_FILE / SSL_CERT_DIR), keep-alive, and the line a user reads when
a certificate is refused.

HTTP/1.1: the stand-in API behind a relay that ends TLS (tests/support/relay.py), as a reverse
proxy would.  HTTP/2: a server built on the h2 library (tests/support/h2_server.py).
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import threading
import traceback
import uuid
from contextlib import ExitStack

import pytest
from conftest import need

from streamer.api.client import DetectionClient
from streamer.errors import ApiError, ApiTransientError, ConfigError
from streamer.imaging import prepare_upload
from streamer.sources.synthetic import SyntheticScene
from support import tls
from support.h2_server import H2Server
from support.relay import TcpRelay

pytestmark = pytest.mark.system  # the certificates are made with openssl

UPLOAD = prepare_upload(SyntheticScene(1280, 720).render(0), 640, 80)
KEY = f"canary-{uuid.uuid4().hex}"
WAIT_S = 5.0
PROTOCOLS = ["http/1.1", "h2"]


@pytest.fixture(scope="module")
def issued(tmp_path_factory):
    """A test CA (ca), a certificate it signed for 127.0.0.1 and localhost (good), ones out of
    date both ways, one for another name, and a self-signed one (its own CA, trusted by no one)."""
    need(shutil.which("openssl") is not None, "openssl is not installed: the TLS tests make their certificates with it")
    folder = tmp_path_factory.mktemp("ca")
    ca = tls.authority(folder)
    return {
        "ca": ca,
        "good": tls.issued(folder, ca, "good"),
        "expired": tls.issued(folder, ca, "expired", not_before="20000101000000Z", not_after="20010101000000Z"),
        "not-yet-valid": tls.issued(
            folder, ca, "not-yet-valid", not_before="20990101000000Z", not_after="21000101000000Z"
        ),
        "another-name": tls.issued(folder, ca, "another-name", san="DNS:example.invalid"),
        "self-signed": tls.self_signed(tmp_path_factory.mktemp("self")),
    }


@pytest.fixture
def trust(monkeypatch, issued):
    """trust(path or None): SSL_CERT_FILE set to path (None: unset, certifi's roots); SSL_CERT_DIR unset."""

    def set_roots(path) -> None:
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        if path is None:
            monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        else:
            monkeypatch.setenv("SSL_CERT_FILE", str(path))

    set_roots(issued["ca"][0])
    return set_roots


@pytest.fixture
def https(api_server, issued):
    """https(protocol, certificate name) -> (server, requests it got): the stand-in API behind a
    TLS relay for "http/1.1", the h2 server for "h2"; both stopped at the end."""
    with ExitStack() as stack:

        def start(protocol: str, which: str = "good"):
            context = tls.server_context(*issued[which])
            if protocol == "h2":
                server = stack.enter_context(H2Server(context))
                return server, lambda: len(server.requests)
            context.set_alpn_protocols(["http/1.1"])
            relay = stack.enter_context(TcpRelay(("127.0.0.1", int(api_server.url.rsplit(":", 1)[1])), tls=context))
            return relay, lambda: sum(api_server.counts.values())

        yield start


def client_for(url: str, protocol: str, **kwargs) -> DetectionClient:
    kwargs.setdefault("timeout_s", 5.0)
    kwargs.setdefault("connect_timeout_s", 2.0)
    return DetectionClient(url, "synthetic/1", KEY, http2=protocol == "h2", **kwargs)


def refused(client: DetectionClient) -> ApiTransientError:
    """The error a request raises: transient, one line, free of the key."""
    with pytest.raises(ApiTransientError) as info:
        client.infer(UPLOAD.body)
    exc = info.value
    assert KEY not in str(exc) and KEY not in "".join(traceback.format_exception(exc))
    assert "\n" not in str(exc) and exc.kind == "unreachable"
    return exc


# --- trusted ---


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_https_with_a_private_ca_in_ssl_cert_file_keeps_one_connection(https, trust, protocol, host):
    server, requests = https(protocol)
    port = server.url.rsplit(":", 1)[1]
    with client_for(f"https://{host}:{port}", protocol) as client:
        for _ in range(3):
            assert len(client.infer(UPLOAD.body).detections) in (2, 3)
    assert requests() == 3
    if protocol == "h2":
        assert server.connections == 1
        assert all(body == UPLOAD.body for _, body in server.requests)
        assert f"api_key={KEY}" in server.requests[0][0]
    else:
        assert (server.accepted, server.handshakes) == (1, 1)


def test_https_with_the_ca_in_ssl_cert_dir(https, trust, issued, tmp_path, monkeypatch):
    """SSL_CERT_DIR: a folder of certificates under their hashed names (openssl rehash)."""
    folder = tmp_path / "certs"
    folder.mkdir()
    shutil.copy(issued["ca"][0], folder / "ca.pem")
    subprocess.run([tls.openssl(), "rehash", str(folder)], check=True, capture_output=True, timeout=30)
    trust(None)
    monkeypatch.setenv("SSL_CERT_DIR", str(folder))
    server, requests = https("http/1.1")
    with client_for(server.url, "http/1.1") as client:
        assert len(client.infer(UPLOAD.body).detections) == 3
    assert requests() == 1


def test_http2_asked_of_a_server_that_speaks_only_http1_falls_back(https, trust):
    server, requests = https("http/1.1")  # its TLS offers only http/1.1
    with client_for(server.url, "h2") as client:
        for _ in range(2):
            assert len(client.infer(UPLOAD.body).detections) == 3
    assert requests() == 2 and server.accepted == 1


def test_an_unreadable_ssl_cert_file_is_a_configuration_error(tmp_path, monkeypatch):
    bad = tmp_path / "roots.pem"
    bad.write_text("not a certificate\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(bad))
    with pytest.raises(ConfigError) as info:
        DetectionClient("https://127.0.0.1:9", "synthetic/1", KEY)
    assert str(info.value).startswith(f"SSL_CERT_FILE: cannot load '{bad}' as CA certificates (")
    assert str(info.value).endswith("point it at a PEM file of certificates, or unset it")


# --- refused certificates: nothing is sent, and the line says why ---


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("roots", ["certifi", "another CA in SSL_CERT_FILE"])
def test_an_untrusted_certificate_names_ssl_cert_file(https, trust, issued, protocol, roots):
    trust(None if roots == "certifi" else issued["ca"][0])
    server, requests = https(protocol, "self-signed")  # not signed by the CA
    with client_for(server.url, protocol) as client:
        exc = refused(client)
    assert str(exc).startswith(f"cannot reach {server.url}/synthetic/1: its TLS certificate is not trusted (")
    assert "set SSL_CERT_FILE to that CA's certificate file" in str(exc)
    assert requests() == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    "which, reason", [("expired", "certificate has expired"), ("not-yet-valid", "certificate is not yet valid")]
)
def test_a_certificate_out_of_its_dates_points_at_the_clock(https, trust, protocol, which, reason):
    server, requests = https(protocol, which)
    with client_for(server.url, protocol) as client:
        exc = refused(client)
    assert str(exc) == (
        f"cannot reach {server.url}/synthetic/1: its TLS certificate is refused ({reason}); "
        "check this machine's clock (a board without a real-time clock needs NTP first), "
        "then the server's certificate"
    )
    assert requests() == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])  # an IP address mismatch, a host name one
def test_a_certificate_for_another_name_says_so(https, trust, protocol, host):
    server, requests = https(protocol, "another-name")
    url = f"https://{host}:{server.url.rsplit(':', 1)[1]}"
    with client_for(url, protocol) as client:
        exc = refused(client)
    assert str(exc).startswith(f"cannot reach {url}/synthetic/1: its TLS certificate is for another name (")
    assert str(exc).endswith("); check the host in api.url")
    assert requests() == 0


# --- handshakes that never end, or end badly ---


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_stalled_tls_handshake_is_a_connect_timeout(protocol):
    with socket.create_server(("127.0.0.1", 0), backlog=8) as listener:  # accepts TCP, never speaks TLS
        url = f"https://127.0.0.1:{listener.getsockname()[1]}"
        with client_for(url, protocol, connect_timeout_s=0.5) as client, pytest.raises(ApiTransientError) as info:
            client.infer(UPLOAD.body)
    assert info.value.kind == "timeout"
    assert str(info.value) == f"{url}/synthetic/1 did not answer within its timeout (connect timeout)"


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
        url = f"https://127.0.0.1:{listener.getsockname()[1]}"
        with client_for(url, "http/1.1") as client, pytest.raises(ApiError) as info:
            client.infer(UPLOAD.body)
        resetter.join(WAIT_S)
    assert not resetter.is_alive()
    assert isinstance(info.value, ApiTransientError) and str(info.value).startswith(f"cannot reach {url}/synthetic/1: ")
