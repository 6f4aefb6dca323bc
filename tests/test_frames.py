"""Queue semantics, backoff, and secret redaction: plain units, no threads needed."""

import logging
import random
import threading
import time

import pytest

from streamer.queues import DropOldestQueue, Latest
from streamer.redact import RedactingFilter, register_secret, scrub, url_for_display
from streamer.retry import Backoff, parse_retry_after


def test_drop_oldest_queue_keeps_the_newest_and_counts_drops():
    q = DropOldestQueue(1)
    for i in range(5):
        q.put(i)
    assert q.dropped == 4 and q.pending() == 1
    assert q.get_newest(0.01) == 4
    assert q.get_newest(0.01) is None


def test_get_newest_drops_older_items_in_a_bigger_queue():
    q = DropOldestQueue(3)
    for i in range(3):
        q.put(i)
    assert q.get_newest(0.01) == 2 and q.dropped == 2


def test_get_waits_at_most_its_timeout():
    q = DropOldestQueue(1)
    started = time.monotonic()
    assert q.get_newest(0.2) is None
    assert 0.15 <= time.monotonic() - started < 1.0


def test_get_wakes_on_put():
    q = DropOldestQueue(1)
    threading.Timer(0.05, q.put, args=("x",)).start()
    assert q.get_newest(5.0) == "x"


def test_latest_versions_and_signal():
    changed = threading.Event()
    latest = Latest(changed)
    assert latest.get() == (0, None)
    latest.set("a")
    assert latest.get() == (1, "a") and changed.is_set()


def test_backoff_doubles_to_the_cap_with_jitter_and_resets():
    b = Backoff(0.5, 4.0, jitter=0.2, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(6)]
    for delay, base in zip(delays, [0.5, 1, 2, 4, 4, 4], strict=True):
        assert base * 0.8 <= delay <= min(4.0, base * 1.2)
    b.reset()
    assert b.next_delay() <= 0.6


def test_backoff_honours_retry_after_even_beyond_its_own_cap():
    b = Backoff(0.5, 10.0, jitter=0.0)
    assert b.next_delay(retry_after_s=3) == 3
    assert b.next_delay(retry_after_s=120) == 120  # the server knows when it will take us again
    assert b.next_delay(retry_after_s=10**6) == 3600  # but not an absurd value


@pytest.mark.parametrize(
    "value, expected", [("2", 2.0), ("0", 0.0), (" 1.5 ", 1.5), ("", None), (None, None), ("soon", None), ("-3", 0.0)]
)
def test_parse_retry_after(value, expected):
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)


def test_scrub_urls_and_registered_secrets():
    register_secret("canary-KEY-987")
    assert scrub("rtsp://admin:hunter2@10.0.0.5:554/s") == "rtsp://admin:***@10.0.0.5:554/s"
    assert scrub("POST http://h/m/1?api_key=abc123&confidence=0.4") == "POST http://h/m/1?api_key=***&confidence=0.4"
    assert "canary-KEY-987" not in scrub("key canary-KEY-987 here")
    assert url_for_display("rtsp://u:p@cam/live?token=1") == "rtsp://u:***@cam/live?token=***"
    assert (
        url_for_display("http://10.0.0.9/videostream.cgi?user=admin&pwd=canaryPW")
        == "http://10.0.0.9/videostream.cgi?user=***&pwd=***"
    )
    # credentials in the path (a common DVR form); the channel still tells cameras apart
    assert (
        url_for_display("rtsp://10.0.0.7:554/user=admin&password=canary&channel=2&stream=0.sdp?")
        == "rtsp://10.0.0.7:554/user=***&password=***&channel=2&stream=0.sdp"
    )
    assert (
        url_for_display("rtsp://a:b@nvr/cam/realmonitor?channel=1&subtype=0")
        == "rtsp://a:***@nvr/cam/realmonitor?channel=1&subtype=0"
    )
    assert url_for_display("rtsp://u:p%40ss@[::1]:554/x") == "rtsp://u:***@[::1]:554/x"


def test_logging_filter_scrubs_messages_args_and_tracebacks(caplog):
    register_secret("canary-log-secret")
    logger = logging.getLogger("test.redact")
    handler = logging.Handler()
    records = []
    handler.emit = records.append
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    try:
        logger.warning("url %s", "rtsp://a:pw@x/y")
        try:
            raise RuntimeError("boom canary-log-secret")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(r.getMessage() for r in records)
    assert "pw@" not in text and "canary-log-secret" not in text and "RuntimeError" in text


def test_url_secrets_are_masked_wherever_they_appear_later():
    from streamer.redact import register_url_secrets, scrub

    register_url_secrets("rtsp://admin:pw%21Secret9@cam/user=admin&password=dvrPass42&channel=1?token=tok123456")
    text = scrub("ffmpeg says: auth failed for admin with pw!Secret9 / pw%21Secret9, dvrPass42, tok123456")
    assert "Secret9" not in text and "dvrPass42" not in text and "tok123456" not in text
    assert "admin" in text  # a user name is not a secret


def test_gstreamer_password_properties_are_masked_and_remembered():
    from streamer.redact import register_url_secrets

    pipeline = (
        "gst:rtspsrc location=rtsp://cam/live user-id=viewer user-pw=gstPw4242 proxy-pw='a proxy Pw77' "
        '! decodebin ! souphttpsrc user-pw="quoted Pw99" ! appsink'
    )
    assert scrub(pipeline) == (
        "gst:rtspsrc location=rtsp://cam/live user-id=viewer user-pw=*** proxy-pw=*** "
        "! decodebin ! souphttpsrc user-pw=*** ! appsink"
    )
    assert "gstPw4242" not in url_for_display(pipeline) and "viewer" in url_for_display(pipeline)
    register_url_secrets(pipeline)
    text = scrub("rtspsrc: 401 for viewer with gstPw4242; proxy 'a proxy Pw77'; quoted Pw99")
    assert "gstPw4242" not in text and "a proxy Pw77" not in text and "quoted Pw99" not in text


@pytest.mark.parametrize(
    ("written", "secret"),
    [  # each as GStreamer's own parser (gst_parse_launch) reads the value
        ("user-pw=pass!word9", "pass!word9"),
        ("user-pw = Spaced123", "Spaced123"),
        ("user-pw= Spaced456", "Spaced456"),
        ('user-pw="a\\"bcd efg"', 'a"bcd efg'),
        ("passphrase=SrtSecret99", "SrtSecret99"),
        ('location="rtsp://u:pw with space@h/x"', "pw with space"),
        ("location=rtsp://u:p%40ssWord@h/x", "p@ssWord"),
    ],
)
def test_every_way_gstreamer_reads_a_password_is_masked(written, secret):
    from streamer.redact import register_url_secrets

    pipeline = f"gst:rtspsrc {written} latency=0 ! decodebin ! appsink"
    register_url_secrets(pipeline)
    assert secret not in scrub(pipeline) and secret not in scrub(f"401 for {secret} and more")
    assert "decodebin ! appsink" in scrub(pipeline)


def test_fault_log_reports_a_spell_once_and_folds_short_spells_into_the_next_warning(caplog, monkeypatch):
    import logging

    import streamer.retry as backoff_module
    from streamer.retry import FaultLog

    clock = [1000.0]
    monkeypatch.setattr(backoff_module.time, "monotonic", lambda: clock[0])
    log = logging.getLogger("test.faultlog")
    faults = FaultLog(log, "API", summary_s=30.0)
    with caplog.at_level(logging.INFO, logger="test.faultlog"):
        for _ in range(20):  # every other answer broken, one a second
            faults.fault("bad body")
            clock[0] += 0.5
            faults.recovered()
            clock[0] += 0.5
        assert [r.getMessage() for r in caplog.records] == [
            "API: bad body (retrying with backoff)",
            "API: recovered after 1 failures in 0.5 s",
        ]
        clock[0] += 30
        faults.fault("bad body")  # the first fault after a quiet half minute is reported again
    assert caplog.records[-1].getMessage() == (
        "API: bad body (retrying with backoff) (and 19 more in short spells since the last report)"
    )
    faults.fault("still bad")
    clock[0] += 31
    with caplog.at_level(logging.INFO, logger="test.faultlog"):
        faults.fault("still bad")
    assert caplog.records[-1].getMessage().startswith("API: still failing, 3 failures in 31 s")


def test_backoff_survives_days_of_failures_without_overflowing():
    from streamer.retry import Backoff

    backoff = Backoff(0.5, 5.0, jitter=0.0)
    delays = [backoff.next_delay() for _ in range(5000)]  # > 1024 failures overflowed 2.0 ** n
    assert delays[-1] == 5.0 and max(delays) == 5.0


def test_frames_wake_the_output_loop_only_when_something_draws_them(tmp_path):
    """Headless and not recording, a new frame must not wake the output loop (30 times a
    second for nothing); with a recorder (or a window) it must."""
    import numpy as np

    from streamer.api.client import DetectionClient
    from streamer.live.dispatch import InferenceSettings
    from streamer.live.pipeline import Outputs, Pipeline
    from streamer.outputs.recorder import Recorder
    from streamer.sources.open import SyntheticSource
    from streamer.types import Frame

    stop = threading.Event()
    frame = Frame("cam", 1, time.time(), time.monotonic(), np.zeros((8, 8, 3), np.uint8))
    with DetectionClient("http://127.0.0.1:9", "synthetic/1", None) as client:  # never called
        for outputs, wakes in [(Outputs(), False), (Outputs(recorder=Recorder(str(tmp_path / "r.avi"), 10.0)), True)]:
            pipeline = Pipeline(SyntheticSource(8, 8, 30.0, stop), client, outputs, InferenceSettings(), stop)
            pipeline.latest_frame.set(frame)
            assert pipeline._changed.is_set() is wakes
            assert pipeline.latest_frame.get() == (1, frame)


def test_join_wakes_the_idle_inference_threads_at_once():
    """Idle threads sleep up to IDLE_WAIT_S between looks at the stop flag; join() wakes them,
    so a stop does not wait that long (a service manager or a user waits about 3 s)."""
    from streamer.api.client import DetectionClient
    from streamer.live.dispatch import IDLE_WAIT_S, InferenceSettings, InferenceWorker
    from streamer.live.publisher import NewestResults, Publisher
    from streamer.queues import DropOldestQueue
    from streamer.stats import Stats

    stop = threading.Event()
    with DetectionClient("http://127.0.0.1:9", "synthetic/1", None) as client:  # never called: no frames
        publisher = Publisher(NewestResults(), Stats(), Stats().snapshot, source="cam", name=None)
        worker = InferenceWorker(
            DropOldestQueue(1), client, publisher, Stats(), stop, InferenceSettings(max_in_flight=4)
        )
        worker.start()
        time.sleep(0.2)  # every thread is now asleep in its wait
        stop.set()
        started = time.monotonic()
        assert worker.join(IDLE_WAIT_S / 2)
        assert time.monotonic() - started < IDLE_WAIT_S / 2


def _far_newer_result():
    """A result for a frame far newer than any a test run reaches: never dropped as late."""
    from streamer.types import Result

    return Result("synthetic", 10**9, time.time(), time.monotonic(), 640, 360, model="synthetic/1", sent_at=time.time())


def test_results_are_not_published_to_outputs_once_they_are_closed(api_server, tmp_path):
    """A request thread that gets its answer after the pipeline shut down must not write to
    an output that is closed (a JsonlWriter's file is gone): its result is left unpublished."""
    from streamer.live.pipeline import Outputs
    from streamer.outputs.jsonl import JsonlWriter
    from support.running import Running, wait_until

    path = tmp_path / "out.jsonl"
    run = Running(api_server.url, Outputs(outputs=[JsonlWriter(str(path))]))
    assert wait_until(lambda: run.stats.published >= 2, 10)
    run.finish()
    lines = path.read_text().splitlines()
    run.pipeline.publisher.offer(_far_newer_result())  # what a request thread does with an answer
    assert run.pipeline.results.next_release() is not None  # held: the publisher has ended
    assert path.read_text().splitlines() == lines


def test_put_back_returns_an_item_unless_a_newer_one_came_in():
    q = DropOldestQueue(1)
    q.put(1)
    item = q.get_newest(0.01)
    q.put_back(item)
    assert q.taken == 0 and q.dropped == 0 and q.get_newest(0.01) == 1
    q.put(2)  # newer than the one handed back next: the newer one wins
    q.put_back(1)
    assert q.taken == 0 and q.dropped == 1 and q.get_newest(0.01) == 2 and q.pending() == 0


def test_a_full_disk_met_while_publishing_the_last_results_does_not_change_the_exit(caplog):
    """Results still held at the stop are published on the way out; if the JSONL file cannot
    take them, the live writer says so in one warning and the run still ends cleanly (issue 15:
    a full disk pauses the JSONL file, never the pipeline)."""
    from streamer.live.pipeline import Outputs
    from streamer.outputs.jsonl import JsonlWriter
    from streamer.standin.server import ApiServer
    from support.running import Running, wait_until

    writer = JsonlWriter("/dev/full")
    with ApiServer("127.0.0.1", 0, latency_ms=5000) as server:  # no answer before the stop
        run = Running(server.url, Outputs(outputs=[writer]))
        assert wait_until(lambda: run.stats.frames_read > 0, 5)
        held = _far_newer_result()
        assert run.pipeline.results.offer(held, release_at=time.monotonic() + 3600)
        run.stop.set()
        run.thread.join(5)
        run.client.close()
    assert not run.thread.is_alive() and run.codes == [0] and run.errors == []
    assert writer.dropped == 1 and run.stats.published == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "/dev/full" in r.getMessage()
    ]
    assert len(warnings) == 1 and "cannot write /dev/full: No space left on device" in warnings[0], caplog.text


def test_a_refused_key_still_ends_the_run_with_a_full_disk_under_the_jsonl_file(caplog):
    """A refused key (401) ends the run and sets the exit code; the full disk met while
    publishing the results held at that stop is one warning, not an error that hides it."""
    from streamer.errors import ApiFatalError
    from streamer.live.pipeline import Outputs
    from streamer.outputs.jsonl import JsonlWriter
    from streamer.standin.server import ApiServer, Fault
    from support.running import Running, wait_until

    with ApiServer("127.0.0.1", 0) as server:
        server.set_fault(Fault(status=401, message="Unauthorized api_key", hang_s=1.0))
        run = Running(server.url, Outputs(outputs=[JsonlWriter("/dev/full")]), client_timeout_s=5)
        assert wait_until(lambda: run.stats.frames_read > 0, 5)
        held = _far_newer_result()
        assert run.pipeline.results.offer(held, release_at=time.monotonic() + 3600)
        run.thread.join(10)  # the 401 comes after 1 s and stops the run
        run.client.close()
    assert not run.thread.is_alive()
    assert [type(e) for e in run.errors] == [ApiFatalError], run.errors
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "/dev/full" in r.getMessage()
    ]
    assert len(warnings) == 1, caplog.text
