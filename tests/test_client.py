"""The API client against a real local server: success, and every error mapped to its class."""

import pytest

from streamer.api.client import DetectionClient
from streamer.errors import (ApiBadRequest, ApiFatalError, ApiMalformedResponse, ApiTransientError)
from streamer.live.imaging import prepare_upload
from streamer.standin.server import ApiServer, Fault
from streamer.sources.synthetic import SyntheticScene

UPLOAD = prepare_upload(SyntheticScene(1280, 720).render(0), 640, 80)


def client_for(server, key="k", timeout_s=5.0):
    return DetectionClient(server.url, "synthetic/1", key, timeout_s=timeout_s, connect_timeout_s=2.0)


def test_success(api_server):
    with client_for(api_server) as client:
        parsed = client.infer(UPLOAD.body)
    assert len(parsed.predictions) == 3 and parsed.image_width == 640


@pytest.mark.parametrize("status, fatal_words", [
    (401, "API key was refused"), (402, "out of credits"), (403, "may not use model synthetic/1"),
    (404, "model synthetic/1 was not found"), (423, "paused"),
])
def test_fatal_statuses(api_server, status, fatal_words):
    api_server.set_fault(Fault(status=status, message="nope"))
    with client_for(api_server, key="canary-key-123") as client, pytest.raises(ApiFatalError) as info:
        client.infer(UPLOAD.body)
    assert fatal_words in str(info.value) and info.value.exit_code == 2
    assert "canary-key-123" not in str(info.value)


@pytest.mark.parametrize("status, retry_after, expected", [(503, "1", 1.0), (429, "7", 7.0), (500, None, None),
                                                           (502, None, None), (504, "soon", None)])
def test_transient_statuses_carry_retry_after(api_server, status, retry_after, expected):
    api_server.set_fault(Fault(status=status, retry_after=retry_after))
    with client_for(api_server) as client, pytest.raises(ApiTransientError) as info:
        client.infer(UPLOAD.body)
    assert info.value.status == status and info.value.retry_after_s == expected


def test_a_redirect_is_a_configuration_error_naming_the_target(api_server):
    api_server.set_fault(Fault(status=301, headers={"Location": "https://elsewhere.example/synthetic/1"}))
    with client_for(api_server) as client, pytest.raises(ApiFatalError) as info:
        client.infer(UPLOAD.body)
    assert str(info.value).endswith("redirects (301) elsewhere: set --api-url (api.url) to https://elsewhere.example")


def test_400_is_a_bad_request(api_server):
    with client_for(api_server) as client, pytest.raises(ApiBadRequest):
        client.infer(b"not base64 at all !!!")


def test_timeout_is_transient(api_server):
    api_server.set_fault(Fault(status=200, hang_s=2.0, remaining=1))
    with client_for(api_server, timeout_s=0.3) as client, pytest.raises(ApiTransientError, match="did not answer"):
        client.infer(UPLOAD.body)


def test_refused_connection_is_transient():
    server = ApiServer("127.0.0.1", 0)
    url = server.url
    server.stop()  # nothing listens there now
    with DetectionClient(url, "synthetic/1", "k", timeout_s=1, connect_timeout_s=1) as client:
        with pytest.raises(ApiTransientError, match="cannot reach"):
            client.infer(UPLOAD.body)


@pytest.mark.parametrize("body", [b"<html><body>Bad gateway</body></html>", b"{not json", b'{"predictions": 5}'])
def test_malformed_200(api_server, body):
    api_server.set_fault(Fault(status=200, raw_body=body))
    with client_for(api_server) as client, pytest.raises(ApiMalformedResponse):
        client.infer(UPLOAD.body)


def test_close_twice_is_safe(api_server):
    client = client_for(api_server)
    client.close()
    client.close()
