"""A live Pipeline run in the test process, on a background thread, against a real local API."""

from __future__ import annotations

import threading
import time

from streamer.api.client import DetectionClient
from streamer.live.dispatch import InferenceSettings
from streamer.live.pipeline import Outputs, Pipeline, Supervision
from streamer.retry import Backoff
from streamer.sources.open import SyntheticSource


def wait_until(condition, timeout_s: float, step_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step_s)
    return condition()


def streamer_threads() -> list[str]:
    """Names of streamer's own threads still alive (the stand-in server's excepted)."""
    ours = ("capture", "dispatch", "publish", "jsonl", "zmq-auth")
    return [t.name for t in threading.enumerate() if t.name in ours or t.name.startswith("request-")]


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
            api_backoff=Backoff(0.2, backoff_max_s),
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
