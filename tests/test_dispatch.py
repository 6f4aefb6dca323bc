"""The request path against the real stand-in API: a hung or broken API cannot stall the
results for long, a JSONL file nobody reads cannot slow sending, and threads carry names."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from streamer.live.dispatch import HUNG_PER_SLOT, InferenceSettings
from streamer.live.pipeline import Outputs
from streamer.outputs.jsonl import QUEUE_LINES, JsonlWriter
from streamer.standin.server import ApiServer, Fault
from support.running import Running, wait_until

HTML = b"<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"


def _recovery_s(run: Running, server: ApiServer, fault: Fault, spell_s: float) -> float:
    """Serve ``fault`` for spell_s, then answer normally again: the seconds from then until a
    result for a frame captured after it is published."""
    assert wait_until(lambda: run.pipeline.results.accepted >= 5, 10), "no results before the fault"
    server.set_fault(fault)
    time.sleep(spell_s)
    server.set_fault(None)
    healed = time.monotonic()

    def fresh() -> bool:
        latest = run.pipeline.results.latest
        return latest is not None and latest.captured_mono > healed

    assert wait_until(fresh, 20), "results never resumed"
    return time.monotonic() - healed


@pytest.mark.parametrize(
    ("spell_s", "timeout_s"), [(5, 30.0), (6, 3.0)], ids=["shorter-than-the-timeout", "longer-than-the-timeout"]
)
def test_results_resume_within_seconds_after_a_hung_api_whatever_the_timeout(spell_s, timeout_s):
    """Requests sent during the hang get no answer for 120 s: without giving up on them, results
    would wait for api.timeout_s (30 s in the first case).  In the second the hang outlasts the
    timeout (6 s against 3 s), so requests also time out during it, again and again."""
    with ApiServer("127.0.0.1", 0) as server:
        run = Running(
            server.url,
            settings=InferenceSettings(max_side=320, max_in_flight=2, max_fps=10),
            client_timeout_s=timeout_s,
            backoff_max_s=30.0,
        )
        try:
            recovered_s = _recovery_s(run, server, Fault(status=200, hang_s=120, label="hang"), spell_s)
            hung = run.stats.hung_requests
            assert run.stats.api_failures.get("hung", 0) == hung >= 1
        finally:
            run.finish()
    print(f"results resumed {recovered_s:.2f} s after a {spell_s} s hang ({hung} requests given up on)")
    assert recovered_s < 8.0, f"results resumed {recovered_s:.1f} s after the API came back"


def test_a_first_backoff_longer_than_the_refusal_pace_still_runs():
    """api.backoff_initial_s may be up to 60 s; refused frames are resent at most 2 s apart.
    A first backoff above that once stopped streamer at start with a ValueError."""
    with ApiServer("127.0.0.1", 0) as server:
        run = Running(server.url, backoff_initial_s=3.0, backoff_max_s=30.0)
        try:
            assert wait_until(lambda: run.pipeline.results.accepted >= 3, 10)
        finally:
            run.finish()


def test_hung_requests_are_capped_and_their_late_answers_dropped():
    """At most 2 x max_in_flight hung requests are outstanding at once; an answer that comes
    after its request was given up on is not published."""
    with ApiServer("127.0.0.1", 0) as server:
        run = Running(
            server.url,
            settings=InferenceSettings(max_side=320, max_in_flight=2, max_fps=10),
            client_timeout_s=30.0,
            backoff_max_s=30.0,
        )
        try:
            assert wait_until(lambda: run.pipeline.results.accepted >= 3, 10)
            server.latency_ms = 4500  # real answers, but only after 4.5 s
            seen = []  # requests outstanding at the server, looked at every 20 ms

            def late_answer_dropped() -> bool:
                seen.append(server.in_flight)
                return run.stats.hung_requests >= 2 and run.pipeline.results.late >= 1

            wait_until(late_answer_dropped, 15, lambda: f"a late answer dropped: {run.stats.line(0, None)}")
        finally:
            server.latency_ms = 0
            run.finish()
    assert max(seen) <= 2 + HUNG_PER_SLOT * 2, f"{max(seen)} requests outstanding at once"


def test_results_resume_within_seconds_after_an_api_answering_html():
    with ApiServer("127.0.0.1", 0) as server:
        run = Running(
            server.url,
            settings=InferenceSettings(max_side=320, max_in_flight=2, max_fps=10),
            client_timeout_s=30.0,
            backoff_max_s=30.0,
        )
        try:
            recovered_s = _recovery_s(run, server, Fault(status=200, raw_body=HTML, label="html"), 8)
            malformed = run.stats.api_malformed
        finally:
            run.finish()
    print(f"results resumed {recovered_s:.2f} s after 8 s of HTML ({malformed} answers refused)")
    assert malformed >= 3
    assert recovered_s < 5.0, f"results resumed {recovered_s:.1f} s after the API came back"


@pytest.mark.parametrize("reader", ["none", "stuck"])
def test_a_jsonl_fifo_nobody_reads_does_not_slow_sending(tmp_path, reader, monkeypatch):
    """A FIFO with no reader, or with one that never reads (writes block once the pipe's
    64 KiB are full): lines are dropped and counted, results keep flowing."""
    import streamer.outputs.jsonl as jsonl_module

    queue_lines = QUEUE_LINES // 8  # the same once the queue is full; it fills in a second or two
    monkeypatch.setattr(jsonl_module, "QUEUE_LINES", queue_lines)
    fifo = tmp_path / "out.jsonl"
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK) if reader == "stuck" else None
    try:
        with ApiServer("127.0.0.1", 0) as server:
            writer = JsonlWriter(str(fifo))
            run = Running(
                server.url,
                Outputs(outputs=[writer]),
                settings=InferenceSettings(max_side=160, max_in_flight=4, max_fps=30),
            )
            try:
                # Far more lines than the pipe and the queue hold: the writer is blocked for good.
                assert wait_until(lambda: writer.dropped > 0, 60), "the queue never filled"
                published = run.stats.published
                assert wait_until(lambda: run.stats.published >= published + 30, 20), "sending stalled"
            finally:
                run.stop.set()
                run.thread.join(10)
                run.client.close()
            assert not run.thread.is_alive() and run.codes == [0]
    finally:  # let the writer thread finish: a reader takes what is there, then goes
        reader_fd = held if held is not None else os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        os.close(reader_fd)
    assert run.stats.published > queue_lines
    assert writer.dropped > 0


def test_threads_carry_their_names_for_the_os_too():
    with ApiServer("127.0.0.1", 0) as server:
        run = Running(server.url, settings=InferenceSettings(max_in_flight=2))
        try:
            assert wait_until(lambda: run.pipeline.results.accepted >= 1, 10)
            names = {t.name for t in threading.enumerate()}
            comms = {Path(p).read_text().strip() for p in Path("/proc/self/task").glob("*/comm")}
        finally:
            run.finish()
    expected = {"capture", "dispatch"} | {f"request-{i}" for i in range(1, 2 + HUNG_PER_SLOT * 2 + 1)}
    assert expected <= names
    assert expected <= comms, comms


def test_sigusr1_dumps_every_thread_by_name(api_server, spawn):
    """kill -USR1 PID shows where each named thread is, and streamer goes on running."""
    run = spawn(
        [
            "run",
            "--source",
            "synthetic",
            "--model",
            "synthetic/1",
            "--api-url",
            api_server.url,
            "--headless",
            "--max-fps",
            "10",
        ]
    )
    assert run.wait_for_log("source synthetic open", 15), run.stderr
    # The capture opens before the dispatcher and the request threads start: signal once a request
    # has been answered and every thread the dump must name runs (by its OS name, which each
    # thread sets as it starts).
    wanted = {"capture", "dispatch", "request-1"}

    def os_thread_names() -> set[str]:
        names = set()
        for comm in Path(f"/proc/{run.popen.pid}/task").glob("*/comm"):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                names.add(comm.read_text().strip())
        return names

    wait_until(lambda: api_server.counts and wanted <= os_thread_names(), 15, lambda: f"{wanted}\n{run.stderr}")
    run.popen.send_signal(signal.SIGUSR1)
    for name in ("MainThread", "capture", "dispatch", "request-1"):  # the dump may still be being written
        assert run.wait_for_log(f"Thread {name!r} (OS thread ", 10), run.stderr
    assert run.popen.poll() is None, "SIGUSR1 stopped it"
    code, _ = run.terminate(signal.SIGTERM)
    assert code == 0, run.stderr
