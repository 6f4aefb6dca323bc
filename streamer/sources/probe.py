"""Why a network source did not open: OpenCV only says that it failed, so ask the host ourselves.

A TCP connect to the URL's host and port (with a timeout) tells a DNS failure, a refused
connection and a timeout apart; for http(s) sources one GET (headers only, through httpx)
also tells 401, 403 and 404.  An RTSP server that accepts the connection is not asked
further: its answer without the camera's digest authentication would mislead.
"""

from __future__ import annotations

import errno
import socket
from urllib.parse import urlsplit

import httpx

from streamer.redact import scrub

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "http": 80, "https": 443}
HTTP_HINTS = {
    401: "check the user and password in the URL",
    403: "the camera refuses this user",
    404: "check the path in the URL",
}


def why_not_open(uri: str, timeout_s: float = 3.0) -> str | None:
    """The cause of a failed open, in a few words, or None if the URL names no host to ask."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    host = parts.hostname
    if not host or not port:
        return None
    where = f"{host}:{port}"
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"DNS: cannot resolve {host} ({exc.strerror})"
    try:
        with socket.create_connection(addresses[0][4][:2], timeout=timeout_s):
            pass
    except ConnectionRefusedError:
        return f"connection refused by {where}: nothing listens there (is the camera on, the port right?)"
    except TimeoutError:
        return f"timeout: {where} did not answer within {timeout_s:g} s (is the host up, or a firewall in the way?)"
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"{where} cannot be reached: {exc.strerror}"
        return f"cannot connect to {where}: {exc.strerror or exc}"
    if scheme in ("http", "https"):
        return _http_status(uri, where, timeout_s)
    return (
        f"{where} accepts connections, so the path, the user and password or the stream itself "
        "was refused (--log-level debug shows FFmpeg's own reason)"
    )


def _http_status(uri: str, where: str, timeout_s: float) -> str:
    try:
        with httpx.stream("GET", uri, timeout=timeout_s, follow_redirects=True) as response:
            status = response.status_code  # headers only: an MJPEG body never ends
    except httpx.HTTPError as exc:
        return f"{where} accepts connections but HTTP fails: {scrub(str(exc)) or exc.__class__.__name__}"
    if status in HTTP_HINTS:
        return f"HTTP {status} from {where}: {HTTP_HINTS[status]}"
    if status >= 400:
        return f"HTTP {status} from {where}"
    return f"{where} answers HTTP {status}, but OpenCV cannot read the stream in it (check its format)"
