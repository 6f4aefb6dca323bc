"""Why a source did not open: OpenCV only says that it failed, so ask the host (or the device) ourselves.

A TCP connect to the URL's host and port (with a timeout) tells a DNS failure, a refused
connection and a timeout apart; for http(s) sources one GET (headers only, through httpx)
also tells 401, 403 and 404.  An rtsp:// server is asked one DESCRIBE on that connection, as
FFmpeg asks it, with the URL's user and password when it wants them (digest or basic, the
answer's hash is all that is sent): its status then tells a wrong path (404) from a wrong
password (401).  RTSP is not HTTP, so httpx cannot ask; the exchange is two requests, read up
to the end of the headers, each bounded by the timeout.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import re
import socket
import time
from urllib.parse import SplitResult, unquote, urlsplit

import httpx

from streamer.redact import scrub

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "http": 80, "https": 443}
HTTP_HINTS = {
    401: "check the user and password in the URL",
    403: "the camera refuses this user",
    404: "check the path in the URL",
}
RTSP_HINTS = {
    **HTTP_HINTS,
    454: "the camera lost the session; it is retried",
    503: "the camera is busy (too many clients?)",
}
MAX_HEADER_BYTES = 16384
LIST_CAMERAS = "ls -l /dev/video* lists the cameras and who may open them"


def why_webcam_not_open(uri: str) -> str:
    """The likely cause of a webcam (an index or /dev/videoN) that did not open, with what to check."""
    device = f"/dev/video{uri}" if uri.isdigit() else uri
    if not os.path.exists(device):
        return f"no {device} here (is the camera plugged in? {LIST_CAMERAS}: the user needs the video group)"
    if not os.access(device, os.R_OK | os.W_OK):
        return (
            f"{device} is there but this user may not open it (permissions: add the user to the video group, "
            "sudo usermod -aG video USER, then log in again)"
        )
    return f"{device} is there but did not open (in use by another program? fuser {device} tells; {LIST_CAMERAS})"


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
        sock = socket.create_connection(addresses[0][4][:2], timeout=timeout_s)
    except ConnectionRefusedError:
        return f"connection refused by {where}: nothing listens there (is the camera on, the port right?)"
    except TimeoutError:
        return f"timeout: {where} did not answer within {timeout_s:g} s (is the host up, or a firewall in the way?)"
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"{where} cannot be reached: {exc.strerror}"
        return f"cannot connect to {where}: {exc.strerror or exc}"
    with sock:
        if scheme == "rtsp":
            return _rtsp_status(sock, parts, where, timeout_s)
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
    return (
        _refusal("HTTP", status, where, HTTP_HINTS)
        or f"{where} answers HTTP {status}, but OpenCV cannot read the stream in it (check its format)"
    )


def _refusal(protocol: str, status: int, where: str, hints: dict[int, str]) -> str | None:
    """``RTSP 404 from HOST:PORT``, with the hint for that status if there is one; None below 400."""
    said = f"{protocol} {status} from {where}"
    return f"{said}: {hints[status]}" if status in hints else said if status >= 400 else None


def _rtsp_status(sock: socket.socket, parts: SplitResult, where: str, timeout_s: float) -> str:
    """Ask an RTSP server for the URL's stream (DESCRIBE), with its user and password if it
    wants them, and say what its status means."""
    url = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1], fragment="").geturl()  # no user:password@
    deadline = time.monotonic() + timeout_s
    try:
        status, headers = _describe(sock, url, 1, None, deadline)
        challenge = headers.get("www-authenticate", "")
        if status == 401 and parts.password is not None and challenge:
            login = (unquote(parts.username or ""), unquote(parts.password))
            status, headers = _describe(sock, url, 2, authorization(challenge, login, "DESCRIBE", url), deadline)
    except TimeoutError:
        return f"{where} accepts connections but does not answer RTSP within {timeout_s:g} s (is this its RTSP port?)"
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"{where} accepts connections but does not answer RTSP ({reason}; is this its RTSP port?)"
    if status == 401 and parts.password is None:
        return f"RTSP 401 from {where}: the camera wants a user and password; put them in the URL (rtsp://USER:PASSWORD@...)"
    return _refusal("RTSP", status, where, RTSP_HINTS) or (
        f"{where} answers RTSP {status} for this stream, so OpenCV cannot read the stream itself "
        "(--log-level debug shows FFmpeg's own reason)"
    )


def _describe(
    sock: socket.socket, url: str, cseq: int, authorization: str | None, deadline: float
) -> tuple[int, dict[str, str]]:
    """Send one DESCRIBE; the answer's status and headers (names in lower case)."""
    lines = [f"DESCRIBE {url} RTSP/1.0", f"CSeq: {cseq}", "Accept: application/sdp", "User-Agent: streamer"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    received = b""
    while b"\r\n\r\n" not in received:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(4096)
        if not chunk:
            first = received.decode("latin-1").strip().split("\n", 1)[0]
            raise ValueError(f"it answered {first[:40]!r} and closed" if first else "it closed the connection")
        received += chunk
        if len(received) > MAX_HEADER_BYTES:
            raise ValueError("its answer has no end of headers")
    head_bytes, _, body = received.partition(b"\r\n\r\n")
    head = head_bytes.decode("latin-1").split("\r\n")
    match = re.fullmatch(r"RTSP/1\.\d (\d{3})(?: .*)?", head[0])
    if match is None:
        raise ValueError(f"it answered {head[0][:40]!r}")
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        # Several WWW-Authenticate lines (Basic and Digest): keep Digest, the one FFmpeg prefers.
        if key not in headers or value.strip().lower().startswith("digest"):
            headers[key] = value.strip()
    # Consume a body (an SDP, an error page) so that a second request reads its own answer.
    length = int(headers.get("content-length", "0") or 0)
    while len(body) < min(length, MAX_HEADER_BYTES):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return int(match[1]), headers


_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]*))')


def authorization(challenge: str, login: tuple[str, str], method: str, url: str) -> str:
    """The Authorization header that answers a WWW-Authenticate challenge, computed as FFmpeg
    does (RFC 2617; the digest's uri is the whole request URL)."""
    user, password = login
    if challenge.split(None, 1)[0].lower() == "basic":
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    params = {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _PARAM.finditer(challenge)}
    realm, nonce, algorithm = params.get("realm", ""), params.get("nonce", ""), params.get("algorithm", "MD5")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

    ha1 = md5(f"{user}:{realm}:{password}")
    cnonce = os.urandom(8).hex()
    if algorithm.lower() == "md5-sess":
        ha1 = md5(f"{ha1}:{nonce}:{cnonce}")
    ha2 = md5(f"{method}:{url}")
    qop = "auth" if "auth" in [q.strip() for q in params.get("qop", "").split(",")] else None
    hashed = f"{ha1}:{nonce}:00000001:{cnonce}:{qop}:{ha2}" if qop else f"{ha1}:{nonce}:{ha2}"
    fields = [
        f'username="{user}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{url}"',
        f'response="{md5(hashed)}"',
    ]
    if qop:
        fields += [f"qop={qop}", "nc=00000001", f'cnonce="{cnonce}"']
    if "algorithm" in params:
        fields.append(f"algorithm={algorithm}")
    if "opaque" in params:
        fields.append(f'opaque="{params["opaque"]}"')
    return "Digest " + ", ".join(fields)
