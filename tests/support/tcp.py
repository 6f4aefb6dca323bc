"""A TCP server on 127.0.0.1 with one thread a connection, for test servers to build on:
a subclass says what to do with a connection (``handle``); this accepts, counts, and on stop
hangs up every connection still open and proves each thread ended.

    class Echo(TcpServer):
        def handle(self, sock): ...

    with Echo() as server:   # server.port, server.accepted
        ...
"""

from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self

WAIT_S = 5.0  # the longest a connection's thread is waited on at stop


class TcpServer:
    name = "test.tcp"  # the threads' name, and the connections' name + ".conn"

    def __init__(self) -> None:
        self.accepted = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []  # one a connection
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)

    def handle(self, sock: socket.socket) -> None:
        """Serve one accepted connection, in its own thread; closing it is left to the caller."""
        raise NotImplementedError

    def track(self, sock: socket.socket) -> None:
        """Hang sock up at stop too (a TLS socket wrapped around an accepted one, an upstream one)."""
        with self._lock:
            self._socks.append(sock)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._connection, args=(sock,), daemon=True, name=f"{self.name}.conn")
            with self._lock:
                self.accepted += 1
                self._socks.append(sock)
                self._threads.append(thread)
            thread.start()

    def _connection(self, sock: socket.socket) -> None:
        sock.settimeout(WAIT_S)
        with sock:
            self.handle(sock)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(WAIT_S)
        self._listener.close()
        with self._lock:
            socks, threads = list(self._socks), list(self._threads)
        for sock in socks:  # a connection the client keeps open ends now
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threads:
            thread.join(WAIT_S)
        assert not any(thread.is_alive() for thread in threads), f"a connection of {self.name} did not end"
