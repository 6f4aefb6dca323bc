"""A TCP relay on 127.0.0.1 in front of a server: it counts the connections a client opens,
and can end TLS in front of a plain-HTTP server, as a reverse proxy in front of an API does.

    with TcpRelay(("127.0.0.1", port)) as relay:               # relay.url: http://127.0.0.1:PORT
        ...
    with TcpRelay(("127.0.0.1", port), tls=context) as relay:  # relay.url: https://..., the server
        ...                                                      # behind it sees plain HTTP
    relay.accepted    # TCP connections accepted so far
    relay.handshakes  # TLS handshakes completed so far (with tls)

It reads nothing of HTTP: bytes are passed on as they come, both ways, and a hang-up on
either side ends the connection on both.
"""

from __future__ import annotations

import select
import socket
import ssl

from support.tcp import WAIT_S, TcpServer


class TcpRelay(TcpServer):
    name = "test.relay"

    def __init__(self, target: tuple[str, int], tls: ssl.SSLContext | None = None):
        super().__init__()
        self.target = target
        self.tls = tls
        self.handshakes = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def handle(self, sock: socket.socket) -> None:
        """One connection, all in this thread (an SSL socket is not to be read and written from
        two at once): the TLS handshake, then the bytes both ways until either side hangs up."""
        client = sock
        if self.tls is not None:
            try:
                client = self.tls.wrap_socket(sock, server_side=True)
            except OSError:  # the client refused the certificate, or hung up
                return
            self.track(client)
            with self._lock:
                self.handshakes += 1
        try:
            upstream = socket.create_connection(self.target, timeout=WAIT_S)
        except OSError:
            return
        self.track(upstream)
        with client, upstream:
            self._pump(client, upstream)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peer = {client: upstream, upstream: client}
        while not self.stopping:
            try:
                readable, _, _ = select.select([client, upstream], [], [], 0.1)
            except (OSError, ValueError):  # closed by __exit__
                return
            for src in readable:
                try:
                    data = src.recv(65536)
                    while isinstance(src, ssl.SSLSocket) and src.pending():  # decrypted, not in the socket
                        data += src.recv(src.pending())
                    if not data:
                        return  # a hang-up: the other side's connection ends too
                    peer[src].sendall(data)
                except OSError:
                    return
