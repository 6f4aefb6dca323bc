"""A live Pipeline with the web server on it, and a source that can be switched off."""

from __future__ import annotations

import threading

import httpx

from streamer.errors import SourceError
from streamer.outputs.web import WebServer, WebSettings
from streamer.sources.open import SyntheticSource
from support.running import Running, streamer_threads
from support.waiting import wait_until


class SwitchableSource(SyntheticSource):
    """The synthetic scene, as a camera that can be unplugged (``down``) and plugged back in."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.down = threading.Event()

    def open(self) -> None:
        if self.down.is_set():
            raise SourceError("camera unplugged (test)")

    def read(self):
        if self.down.is_set():
            self._pacer.wait()
            return None
        return super().read()


class Served:
    """Running + WebServer on 127.0.0.1 (a free port); ``client`` talks to it."""

    def __init__(self, api_url: str, source=None, **settings):
        self.running = Running(api_url, source=source)
        self.pipeline = self.running.pipeline
        self.web = WebServer(self.pipeline, WebSettings("127.0.0.1", 0, **settings)).start()
        self.pipeline.add_output(self.web)
        self.url = self.web.url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def close(self) -> None:
        self.client.close()
        self.running.finish()
        self.web.close()
        # close() does not join the web-snapshot thread (its pool is shut down without waiting):
        # it ends on its own, soon.
        wait_until(lambda: not streamer_threads(), 2, lambda: f"streamer's threads to end: {streamer_threads()}")
