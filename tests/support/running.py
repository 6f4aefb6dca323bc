"""A live Pipeline run in the test process, on a background thread, against a real local API."""

from __future__ import annotations

import threading

from streamer.api.client import DetectionClient
from streamer.live.dispatch import InferenceSettings
from streamer.live.pipeline import Outputs, Pipeline, Supervision
from streamer.retry import Backoff
from streamer.sources.open import SyntheticSource
from support.waiting import wait_until  # also re-exported for the tests

# Every thread streamer starts, by name (tests/test_threads.py checks this against streamer/):
# named_thread(...) and the threads it renames, and paho's name for its network thread, which
# streamer renames "mqtt" as soon as it runs.  The stand-in server's threads are not streamer's.
THREAD_NAMES = {
    "capture", "dispatch", "publish", "request", "jsonl", "zmq-auth", "http", "web-video", "mqtt", "mqtt-snapshot",
}  # fmt: skip
THREAD_PREFIXES = ("request-", "close-", "web-snapshot_", "paho-mqtt-client-")


def streamer_threads(within_s: float = 5.0) -> list[str]:
    """Names of streamer's own threads still alive after ``within_s`` (close a test's own paho
    client first).  A stop leaves a request blocked in a bounded call to end by itself (the
    process would exit without it): on a loaded machine that takes a moment."""

    def alive() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name in THREAD_NAMES or t.name.startswith(THREAD_PREFIXES)]

    wait_until(lambda: not alive(), within_s)
    return alive()


class Running:
    """A Pipeline on a background thread (it has no window, so any thread will do)."""

    def __init__(
        self,
        api_url: str,
        outputs: Outputs | None = None,
        *,
        settings: InferenceSettings | None = None,
        source=None,
        client_timeout_s: float = 0.8,
        backoff_max_s: float = 1.0,
        backoff_initial_s: float = 0.2,
        **supervision,
    ):
        self.stop = threading.Event()
        self.client = DetectionClient(
            api_url, "synthetic/1", None, timeout_s=client_timeout_s, connect_timeout_s=0.5, max_connections=8
        )
        source = source or SyntheticSource(640, 360, 30.0, self.stop)
        self.pipeline = Pipeline(
            source,
            self.client,
            outputs or Outputs(),
            settings or InferenceSettings(),
            self.stop,
            supervision=Supervision(**{"heartbeat_s": 0.5, **supervision}),
            api_backoff=Backoff(backoff_initial_s, backoff_max_s),
        )
        self.stats = self.pipeline.stats
        self.codes: list[int] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name="test.pipeline")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.codes.append(self.pipeline.run())
        except BaseException as exc:  # the test asserts there was none
            self.errors.append(exc)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.client.close()
        assert not self.thread.is_alive()
        assert self.errors == [] and self.codes == [0]
