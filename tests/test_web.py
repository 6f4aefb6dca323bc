"""The web server against a live pipeline on 127.0.0.1: every endpoint, the video's costs and
bounds, the token, remote binds, SSE and Prometheus output read back by their parsers."""

from __future__ import annotations

import json
import re
import socket
import time

import cv2
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamer.config import load
from streamer.errors import ConfigError
from streamer.imaging import encode_jpeg
from streamer.outputs.metrics import MAX_LABELS, Metrics
from streamer.outputs.web import WebServer, WebSettings, web_settings
from streamer.outputs.web_video import NewestSlot
from streamer.stats import Stats
from streamer.types import Delivery, Detection, Result
from support.running import streamer_threads, wait_until
from support.web import Served, SwitchableSource

SECURITY = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@pytest.fixture
def served(api_server):
    s = Served(api_server.url)
    assert wait_until(lambda: s.web.latest_detections is not None and s.web.latest_status is not None, 10)
    yield s
    s.close()


def mjpeg_frames(url: str, count: int, timeout_s: float = 10.0, **params) -> list[np.ndarray]:
    """The first ``count`` JPEG parts of a multipart stream, decoded."""
    frames, buffer = [], b""
    with httpx.stream("GET", url, params=params, timeout=timeout_s) as response:
        assert response.headers["content-type"].startswith("multipart/x-mixed-replace; boundary=frame")
        for chunk in response.iter_bytes():
            buffer += chunk
            while True:
                start = buffer.find(b"\xff\xd8")
                end = buffer.find(b"\xff\xd9", start + 2)
                if start < 0 or end < 0:
                    break
                frames.append(cv2.imdecode(np.frombuffer(buffer[start : end + 2], np.uint8), cv2.IMREAD_COLOR))
                buffer = buffer[end + 2 :]
            if len(frames) >= count:
                return frames
    return frames


def sse_events(url: str, count: int, timeout_s: float = 10.0) -> list[tuple[str, dict]]:
    events, kind = [], None
    with httpx.stream("GET", url, timeout=timeout_s) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                if len(events) >= count:
                    return events
    return events


@pytest.mark.parametrize(
    ("path", "status", "content_type"),
    [
        ("/", 200, "text/html"),
        ("/snapshot.jpg", 200, "image/jpeg"),
        ("/snapshot.jpg?raw=1", 200, "image/jpeg"),
        ("/api/status", 200, "application/json"),
        ("/api/detections", 200, "application/json"),
        ("/healthz", 200, "application/json"),
        ("/metrics", 200, "text/plain"),
        ("/nothing-here", 404, None),
        ("/api", 404, None),
    ],
)
def test_each_endpoint_answers_with_the_security_headers(served, path, status, content_type):
    response = served.client.get(path)
    assert response.status_code == status, response.text
    if content_type:
        assert response.headers["content-type"].startswith(content_type)
    for name, value in SECURITY.items():
        assert response.headers[name] == value
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    head = served.client.head(path)
    assert head.status_code == status and head.content == b""


def test_only_get_and_head(served):
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = served.client.request(method, "/api/status")
        assert response.status_code == 405
        assert response.headers["x-content-type-options"] == "nosniff"


def test_page_loads_nothing_from_outside_and_runs_only_its_own_script(served):
    response = served.client.get("/")
    html = response.text
    assert "http:" not in html and "https:" not in html and "@import" not in html and "url(" not in html
    assert re.findall(r"""(?:src|href)\s*=\s*["'](?:[a-z]+:|//)""", html) == []  # relative URLs only
    csp = response.headers["content-security-policy"]
    nonce = csp.split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in html and "default-src 'none'" in csp
    assert served.client.get("/").headers["content-security-policy"] != csp  # a fresh nonce each time
    assert ".innerHTML" not in html and "insertAdjacentHTML" not in html


def test_status_detections_and_snapshots(served):
    status = served.client.get("/api/status").json()
    assert status["type"] == "status" and status["source_state"] == "open" and status["counters"]["frames_read"] > 0
    detections = served.client.get("/api/detections").json()
    assert detections["type"] == "detections"
    assert {p["class"] for p in detections["predictions"]} == {"red-square", "green-circle", "blue-box"}
    drawn = cv2.imdecode(np.frombuffer(served.client.get("/snapshot.jpg").content, np.uint8), cv2.IMREAD_COLOR)
    raw = cv2.imdecode(np.frombuffer(served.client.get("/snapshot.jpg?raw=1").content, np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == raw.shape == (360, 640, 3)
    # The drawing darkens a status band along the top; the raw frame has the scene's grey there.
    assert drawn[:10].mean() < raw[:10].mean() - 5


def frames_go_by(served, count: int = 30) -> None:
    """Wait until the pipeline has read ``count`` more frames (each one a JPEG a viewer would get)."""
    stats = served.running.stats
    read = stats.frames_read
    wait_until(lambda: stats.frames_read >= read + count, 10, f"{count} more frames read")


def test_no_jpeg_is_encoded_until_a_viewer_comes_and_none_after_it_leaves(served, monkeypatch):
    feed = served.web.feed
    encoded = []  # each JPEG the encoder thread made and handed to the viewers
    publish = feed._publish
    monkeypatch.setattr(feed, "_publish", lambda jpeg: (encoded.append(1), publish(jpeg)))
    frames_go_by(served)
    assert len(encoded) == 0
    frames = mjpeg_frames(served.url + "/stream.mjpg", 3)
    assert len(frames) == 3 and all(f is not None and f.shape == (360, 640, 3) for f in frames)
    assert wait_until(lambda: served.web.feed.viewers == 0, 5)
    after = len(encoded)
    frames_go_by(served)
    assert len(encoded) == after


def test_the_stream_keeps_to_its_rate_and_size(api_server):
    scene = SwitchableSource(1280, 720, 30.0)
    s = Served(api_server.url, source=scene, fps=5.0, max_side_px=320)
    try:
        started = time.monotonic()
        frames = mjpeg_frames(s.url + "/stream.mjpg", 12)
        took = time.monotonic() - started
        assert frames[0].shape == (180, 320, 3)
        assert took > 1.6, f"12 frames at most 5 a second took only {took:.2f} s"  # 11 intervals of 0.2 s
        assert not np.array_equal(frames[0], frames[-1])  # the frame id drawn on it moves on
    finally:
        s.close()


def test_a_viewer_that_never_reads_has_frames_dropped_not_queued(served, monkeypatch):
    dropped: dict[NewestSlot, int] = {}  # per viewer, the items replaced before it took them
    put = NewestSlot.put

    def counting_put(slot: NewestSlot, item: bytes) -> None:
        if slot._item is not None:
            dropped[slot] = dropped.get(slot, 0) + 1
        put(slot, item)

    monkeypatch.setattr(NewestSlot, "put", counting_put)
    stalled = socket.create_connection(("127.0.0.1", served.web.address[1]))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        assert wait_until(lambda: served.web.feed.viewers == 1, 5)
        # It takes no bytes: once its socket is full, its newest-frame slot replaces frames.
        assert wait_until(lambda: any(n > 5 for n in dropped.values()), 20)
        frames = mjpeg_frames(served.url + "/stream.mjpg", 5)  # another viewer is served meanwhile
        assert len(frames) == 5
        assert served.pipeline.stats.capture_rate.rate() > 20
    finally:
        stalled.close()


def test_events_carry_the_feed_messages(served):
    events = sse_events(served.url + "/api/events", 6)
    kinds = {kind for kind, _ in events}
    assert kinds == {"status", "detections"}
    for kind, message in events:
        assert message["type"] == kind
    with httpx.stream("GET", served.url + "/api/events", timeout=10) as response:
        first = next(response.iter_lines())
    assert first == "retry: 2000"


def test_healthz_names_the_fault(api_server):
    source = SwitchableSource(640, 360, 30.0)
    s = Served(api_server.url, source=source, health_max_age_s=1.5)
    try:
        assert wait_until(lambda: s.client.get("/healthz").status_code == 200, 10)
        assert s.client.get("/healthz").json()["ok"] is True
        source.down.set()
        assert wait_until(lambda: s.client.get("/healthz").status_code == 503, 15)
        body = s.client.get("/healthz").json()
        assert body["ok"] is False and "source reconnecting" in body["reasons"]
        assert any(reason.startswith("no result for") for reason in body["reasons"]) or body["source_state"]
        source.down.clear()
        assert wait_until(lambda: s.client.get("/healthz").status_code == 200, 15)
    finally:
        s.close()


def test_healthz_answers_a_probe_without_the_token_with_its_status_only(api_server):
    """Issue 21: a container's HEALTHCHECK has no token.  Without it /healthz still says healthy
    (200) or not (503), and nothing more; with it, the reasons and the states too."""
    s = Served(api_server.url, token="s3cret-token", health_max_age_s=30)
    try:
        assert wait_until(lambda: s.client.get("/healthz").status_code == 200, 10)
        assert s.client.get("/healthz").json() == {"ok": True}
        full = s.client.get("/healthz", headers={"Authorization": "Bearer s3cret-token"}).json()
        assert full["ok"] is True and full["reasons"] == [] and full["source_state"] == "open"
        assert s.client.get("/api/status").status_code == 401  # everything else keeps the token
        icon = s.client.get("/favicon.ico")
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/png"
        assert icon.content.startswith(b"\x89PNG")
    finally:
        s.close()


def test_metrics_read_back_by_the_prometheus_parser(served):
    families = {f.name: f for f in text_string_to_metric_families(served.client.get("/metrics").text)}
    frames = families["streamer_frames_read"].samples
    assert frames[0].name == "streamer_frames_read_total" and frames[0].value > 0
    for name in ("streamer_requests", "streamer_results", "streamer_published", "streamer_source_reconnects"):
        assert name in families
    assert families["streamer_source_up"].samples[0].value == 1.0
    assert families["streamer_api_up"].samples[0].value == 1.0
    ages = [s for s in families["streamer_result_age_at_publish_seconds"].samples if s.name.endswith("_count")]
    assert ages[0].value > 0
    assert "streamer_request_latency_seconds" in families
    classes = {s.labels["class_name"] for s in families["streamer_detections"].samples if s.name.endswith("_total")}
    assert classes == {"red-square", "green-circle", "blue-box"}
    assert not any("process_" in name or "python_" in name for name in families)  # our own registry only


def test_class_labels_are_escaped_and_capped():
    metrics = Metrics(Stats().snapshot)
    hostile = 'a"b\\c\nd</script>'
    names = [hostile] + [f"class-{i}" for i in range(MAX_LABELS + 20)]
    result = Result("cam", 1, 0.0, 0.0, 64, 64, detections=tuple(Detection(1, 1, 1, 1, 0.5, n) for n in names))
    metrics.observe(Delivery("detections", b"{}", {"published_at": 1.0}, result=result))
    families = {f.name: f for f in text_string_to_metric_families(metrics.text().decode())}
    labels = {
        s.labels["class_name"]: s.value for s in families["streamer_detections"].samples if s.name.endswith("_total")
    }
    assert hostile in labels  # escaped on the way out, read back intact
    assert len(labels) == MAX_LABELS + 1 and labels["other"] == 21


@pytest.mark.parametrize(
    ("headers", "params", "status"),
    [
        ({}, {}, 401),
        ({"Authorization": "Bearer wrong"}, {}, 401),
        ({}, {"token": "wrong"}, 401),
        ({"Authorization": "Bearer s3cret-token"}, {}, 200),
        ({"Authorization": "bearer s3cret-token"}, {}, 200),
        ({}, {"token": "s3cret-token"}, 200),
    ],
)
def test_token(api_server, headers, params, status):
    s = Served(api_server.url, token="s3cret-token")
    try:
        for path in ("/", "/api/status", "/metrics", "/nothing"):
            response = s.client.get(path, headers=headers, params=params)
            expected = 404 if path == "/nothing" and status == 200 else status
            assert response.status_code == expected, path
            assert "s3cret-token" not in response.text
            assert response.headers["x-content-type-options"] == "nosniff"
    finally:
        s.close()


@pytest.mark.parametrize(
    ("output", "error"),
    [
        ({"http": "0.0.0.0:8080"}, "can be reached from other machines"),
        ({"http": "192.168.1.5:8080"}, "http_allow_remote: true"),
        ({"http": "[::]:8080"}, "can be reached from other machines"),
        ({"http": "abc"}, "expected [HOST:]PORT"),
        ({"http": "70000"}, "expected [HOST:]PORT"),
        ({"http": 8080, "http_auth": "maybe"}, "expected one of token, none"),
        ({"http": 8080, "http_fps": 0}, "output.http_fps"),
    ],
)
def test_bad_or_remote_binds_are_refused(output, error):
    with pytest.raises(ConfigError) as caught:
        load(overrides={f"output.{k}": v for k, v in output.items()}, env={})
    assert error in str(caught.value) and caught.value.exit_code == 2


def test_a_bare_port_means_loopback_and_a_remote_bind_needs_a_token(tmp_path, caplog):
    assert load(overrides={"output.http": "8080"}, env={}).output.http == "127.0.0.1:8080"
    remote = {"output.http": "0.0.0.0:8080", "output.http_allow_remote": True}
    with pytest.raises(
        ConfigError, match=r"^output\.http: 0\.0\.0\.0:8080 can be reached .* needs a token \(from --http\); "
    ):
        load(overrides=remote, env={})
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    with_file = load(overrides={**remote, "output.http_token_file": str(token_file)}, env={})
    assert web_settings(with_file).token == "from-a-file"
    open_to_all = web_settings(load(overrides={**remote, "output.http_auth": "none"}, env={}))
    assert open_to_all.token is None
    assert "output.http_auth: none" in caplog.text


def test_systemd_credential_gives_the_token(tmp_path, monkeypatch):
    (tmp_path / "http_token").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    remote = {"output.http": "0.0.0.0:8080", "output.http_allow_remote": True}
    assert web_settings(load(overrides=remote)).token == "from-systemd"


def test_a_port_in_use_is_one_line_and_exit_2(spawn):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = spawn(["demo", "--headless", "--duration", "20", "--http", str(port)])
        assert proc.wait(30) == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"cannot listen on 127.0.0.1:{port}" in errors[0], proc.stderr


def test_remote_bind_from_the_command_line_is_exit_2(spawn):
    proc = spawn(["demo", "--headless", "--duration", "20", "--http", "0.0.0.0:0"])
    assert proc.wait(30) == 2
    assert "error: output.http: 0.0.0.0:0 can be reached from other machines" in proc.stderr


def test_demo_logs_the_page_url_and_serves_it(spawn):
    proc = spawn(["demo", "--headless", "--duration", "30"])
    try:
        assert proc.wait_for_log("web page: http://127.0.0.1:", 20), proc.stderr
        url = proc.stderr.split("web page: ")[1].split()[0]
        assert wait_until(lambda: httpx.get(url + "healthz", timeout=5).status_code == 200, 15)
        assert "streamer" in httpx.get(url, timeout=5).text
    finally:
        code, _ = proc.terminate()
    assert code == 0


def test_the_api_key_never_appears(api_server):
    from streamer.redact import register_secret

    key = "k3y-that-must-not-show"
    register_secret(key)
    s = Served(api_server.url)
    s.running.client.api_key = key  # what a run with a key holds
    try:
        assert wait_until(lambda: s.web.latest_detections is not None, 10)
        for path in ("/", "/api/status", "/api/detections", "/healthz", "/metrics"):
            assert key not in s.client.get(path).text
    finally:
        s.close()


def test_encode_jpeg_shrinks_to_the_longest_side():
    image = np.zeros((720, 1280, 3), np.uint8)
    small = cv2.imdecode(np.frombuffer(encode_jpeg(image, 80, 960), np.uint8), cv2.IMREAD_COLOR)
    assert small.shape == (540, 960, 3)
    same = cv2.imdecode(np.frombuffer(encode_jpeg(image, 80, 2000), np.uint8), cv2.IMREAD_COLOR)
    assert same.shape == (720, 1280, 3)


def test_close_is_safe_twice_and_before_start(api_server):
    s = Served(api_server.url)
    port = s.web.address[1]
    assert wait_until(lambda: s.client.get("/healthz").status_code == 200, 10)
    s.close()  # proves the http and web-video threads ended
    with pytest.raises(ConnectionRefusedError):  # the port is closed: nothing answers there any more
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    started = time.monotonic()
    s.web.close()  # again: no error, and at once
    assert time.monotonic() - started < 0.5
    unstarted = WebServer(s.pipeline, WebSettings("127.0.0.1", 0))
    unstarted.close()  # never started: no error, and no thread left behind
    assert unstarted.address is None and streamer_threads() == []


def test_sigterm_with_a_viewer_and_a_client_that_never_reads_exits_in_time(spawn):
    proc = spawn(["demo", "--headless", "--duration", "60"])
    assert proc.wait_for_log("web page: http://127.0.0.1:", 20), proc.stderr
    url = proc.stderr.split("web page: ")[1].split()[0]
    port = int(url.rsplit(":", 1)[1].strip("/"))
    stalled = socket.create_connection(("127.0.0.1", port))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        assert len(mjpeg_frames(url + "stream.mjpg", 3)) == 3
        time.sleep(2.0)  # the stalled client's socket fills up meanwhile
        code, took = proc.terminate()
    finally:
        stalled.close()
    assert code == 0 and took < 3.0, (took, proc.stderr)
