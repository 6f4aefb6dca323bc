"""An HTTP/2 server over TLS on 127.0.0.1, built on the h2 library: it answers every request
with ANSWER, a valid detection answer, and records what it received.

    with H2Server(tls.server_context(cert, key)) as server:   # offers only "h2" by ALPN
        DetectionClient(server.url, ..., http2=True)
        server.connections   # TLS connections that completed a handshake
        server.requests      # [(path with its query, body), ...] in the order they ended

It speaks nothing but HTTP/2: a client that does not negotiate h2 by ALPN is hung up on.
"""

from __future__ import annotations

import json
import socket
import ssl

import h2.config
import h2.connection
import h2.events

from support.tcp import TcpServer

# Two boxes in a 640x360 upload: what parse_response accepts.
ANSWER = json.dumps(
    {
        "inference_id": "h2",
        "time": 0.001,
        "image": {"width": 640, "height": 360},
        "predictions": [
            {
                "x": 102.0,
                "y": 51.0,
                "width": 102.0,
                "height": 86.0,
                "confidence": 0.99,
                "class": "red-square",
                "class_id": 0,
            },
            {
                "x": 357.0,
                "y": 186.0,
                "width": 94.0,
                "height": 94.0,
                "confidence": 0.9,
                "class": "green-circle",
                "class_id": 1,
            },
        ],
    }
).encode()


class H2Server(TcpServer):
    name = "test.h2"

    def __init__(self, tls: ssl.SSLContext):
        super().__init__()
        tls.set_alpn_protocols(["h2"])
        self.tls = tls
        self.connections = 0
        self.requests: list[tuple[str, bytes]] = []

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def handle(self, sock: socket.socket) -> None:
        try:
            with self.tls.wrap_socket(sock, server_side=True) as tls_sock:
                self.track(tls_sock)
                if tls_sock.selected_alpn_protocol() != "h2":
                    return
                with self._lock:
                    self.connections += 1
                self._speak(tls_sock)
        except OSError:  # a refused certificate, a hang-up, a quiet connection past WAIT_S
            pass

    def _speak(self, sock: ssl.SSLSocket) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        paths: dict[int, str] = {}
        bodies: dict[int, bytes] = {}
        while not self.stopping and (data := sock.recv(65536)):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    paths[event.stream_id] = dict(event.headers)[b":path"].decode()
                    bodies[event.stream_id] = b""
                elif isinstance(event, h2.events.DataReceived):
                    bodies[event.stream_id] += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    self.requests.append((paths.pop(event.stream_id), bodies.pop(event.stream_id)))
                    conn.send_headers(
                        event.stream_id,
                        [
                            (":status", "200"),
                            ("content-type", "application/json"),
                            ("content-length", str(len(ANSWER))),
                        ],
                    )
                    conn.send_data(event.stream_id, ANSWER, end_stream=True)
            sock.sendall(conn.data_to_send())
