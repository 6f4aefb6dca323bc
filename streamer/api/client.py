"""The HTTP client for a Roboflow-compatible detection API (see roboflow-api.md).

One persistent pool of keep-alive connections with timeouts on: streamer's own small
HTTP/1.1 client (transport.py) for a direct connection, httpx when the environment sets a
proxy or HTTP/2 is asked for.  Every failure is mapped once, here, to the ``ApiError``
tree so callers decide skip / back off / stop.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import zlib
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit, urlunsplit

import httpx

from streamer import __version__
from streamer.api.backoff import parse_retry_after
from streamer.errors import (ApiBadRequest, ApiError, ApiFatalError, ApiMalformedResponse,
                             ApiTransientError)
from streamer.api.responses import Parsed, parse_response
from streamer.redact import register_secret, scrub, url_for_display
from streamer.api.transport import ConnectionPool, PhaseTimeout, proxy_for

log = logging.getLogger(__name__)

# The API reads the raw body as base64 whatever this says, but 400s without one.
BODY_CONTENT_TYPE = "application/x-www-form-urlencoded"
BODY_HEADERS = {"Content-Type": BODY_CONTENT_TYPE}
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024
INFLATE_STEP_BYTES = 1024 * 1024  # zlib builds its output twice over: keep each step small
ACCEPT_ENCODING = "gzip, deflate"  # the ones _read_capped inflates itself


def _inflater(content_encoding: str):
    """A zlib decompressor for the body's Content-Encoding; None for an uncompressed body."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(zlib.MAX_WBITS | 32)  # +32: zlib or gzip header, detected
    raise ApiMalformedResponse(f"malformed API response: Content-Encoding {content_encoding[:40]!r} was not "
                               f"asked for (we accept {ACCEPT_ENCODING})")


def _snippet(content: bytes) -> str:
    """The start of a body, fit for a one-line message: control characters as '?'."""
    text = content[:60].decode("utf-8", "replace")
    return scrub("".join(c if c.isprintable() else "?" for c in text))


def _certificate_problem(exc: ssl.SSLCertVerificationError) -> str:
    """Why the server's TLS certificate was refused, and what to do about it."""
    reason = scrub(exc.verify_message or str(exc))
    if exc.verify_code in (9, 10):  # not yet valid, expired
        return (f"its TLS certificate is refused ({reason}); check this machine's clock (a board "
                "without a real-time clock needs NTP first), then the server's certificate")
    if exc.verify_code in (62, 64):  # host name or IP address mismatch
        return f"its TLS certificate is for another name ({reason}); check the host in api.url"
    return (f"its TLS certificate is not trusted ({reason}); if it is signed by your own CA, "
            "set SSL_CERT_FILE to that CA's certificate file")


def _server_message(response, body: bytes) -> str:
    try:
        data = json.loads(body)
        message = data.get("message") if isinstance(data, dict) else None
    except (ValueError, RecursionError):
        message = None
    if not isinstance(message, str) or not message:
        message = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    message = " ".join(message.split())
    return scrub(message[:200])


class DetectionClient:
    """Sends images to ``{api_url}/{model}`` and returns parsed responses."""

    def __init__(self, api_url: str, model: str, api_key: str | None, *, confidence: float = 0.4,
                 overlap: float = 0.3, connect_timeout_s: float = 5.0, timeout_s: float = 10.0,
                 max_connections: int = 4, transport: httpx.BaseTransport | None = None,
                 http2: bool = False):
        register_secret(api_key)
        self.api_url = api_url.rstrip("/")
        self.model = model
        self._api_key = api_key
        self.confidence = confidence
        self.overlap = overlap
        self.timeout_s = timeout_s
        headers = {"User-Agent": f"streamer/{__version__}", "Accept": "*/*", "Accept-Encoding": ACCEPT_ENCODING}
        proxy = proxy_for(self.api_url)
        self._pool: ConnectionPool | None = None
        self._http: httpx.Client | None = None
        if http2 or proxy or transport is not None:
            if proxy:
                log.info("API requests go through the proxy %s (from the environment)", url_for_display(proxy))
            self._http = httpx.Client(
                timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
                limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
                http2=http2, headers=headers, transport=transport)
        else:
            self._pool = ConnectionPool(self.api_url, connect_timeout_s=connect_timeout_s, timeout_s=timeout_s,
                                        max_connections=max_connections, headers=headers)
            self._path = quote(f"{urlsplit(self.api_url).path}/{model}", safe="/%:@-._~!$&'()*+,;=")
            self._frame_target: tuple = (None, "")  # ((confidence, overlap), path and query) of a frame
        self._where = url_for_display(self.endpoint)  # for messages, worked out once
        self._closed = False

    @property
    def backend(self) -> str:
        """Which HTTP stack sends the requests: "pool" (transport.py) or "httpx"."""
        return "pool" if self._pool is not None else "httpx"

    @property
    def endpoint(self) -> str:
        return f"{self.api_url}/{self.model}"

    def _params(self, **extra: Any) -> dict[str, Any]:
        params: dict[str, Any] = {"confidence": self.confidence, "overlap": self.overlap}
        if self._api_key:
            params["api_key"] = self._api_key
        params.update({k: v for k, v in extra.items() if v is not None})
        return params

    def infer(self, body: bytes) -> Parsed:
        """POST one base64 JPEG body; return the parsed JSON response."""
        content = self.request(body=body)
        return self._parse(content)

    def infer_url(self, image_url: str) -> Parsed:
        """Ask the server to fetch ``image_url`` itself (the ``image=`` parameter)."""
        return self._parse(self.request(image_url=image_url))

    def request(self, body: bytes | None = None, image_url: str | None = None, fmt: str = "json") -> bytes:
        """Send one request and return the raw response body of a 200; raise ApiError otherwise."""
        extra = {"image": image_url, "format": None if fmt == "json" else fmt}
        headers = BODY_HEADERS if body is not None else {}
        where = self._where
        if self._closed:
            raise ApiTransientError(f"cannot reach {where}: the client is closed")
        try:
            if self._pool is not None:
                if image_url is None and fmt == "json":  # a frame: the same query every time
                    if self._frame_target[0] != (self.confidence, self.overlap):
                        self._frame_target = ((self.confidence, self.overlap),
                                              f"{self._path}?{urlencode(self._params())}")
                    target = self._frame_target[1]
                else:
                    target = f"{self._path}?{urlencode(self._params(**extra))}"
                with self._pool.post(target, body, headers) as response:
                    content = self._read_capped(response)
            else:
                assert self._http is not None
                with self._http.stream("POST", self.endpoint, params=self._params(**extra), content=body,
                                       headers=headers) as response:
                    content = self._read_capped(response)
        except (httpx.TimeoutException, TimeoutError) as exc:
            phase = str(exc) if isinstance(exc, PhaseTimeout) else exc.__class__.__name__
            raise ApiTransientError(f"{where} did not answer within its timeout ({phase})", kind="timeout") from None
        except httpx.DecodingError as exc:
            raise ApiMalformedResponse(f"malformed API response: cannot decode the body ({exc.__class__.__name__})") from None
        except ssl.SSLCertVerificationError as exc:
            raise ApiTransientError(f"cannot reach {where}: {_certificate_problem(exc)}") from None
        except (httpx.HTTPError, OSError, http.client.HTTPException) as exc:  # refused, reset, protocol errors
            raise ApiTransientError(f"cannot reach {where}: {scrub(str(exc)) or exc.__class__.__name__}") from None
        self._raise_for_status(response, content)
        return content

    def _read_capped(self, response) -> bytes:
        """The body, refused as soon as it is known to pass the cap: at once when the
        Content-Length says so, else as the decoded bytes reach it.

        We inflate gzip/deflate ourselves, with a limit on each step: httpx inflates each
        64 KiB read whole, and 64 KiB of gzip can hold 64 MiB (a gzip bomb)."""
        too_large = f"response from {self._where} is larger than {MAX_RESPONSE_BYTES // 2**20} MiB; skipped"
        declared = response.headers.get("Content-Length", "").lstrip("0")
        if declared.isascii() and declared.isdigit() and (  # int() refuses 4300+ digits
                len(declared) > len(str(MAX_RESPONSE_BYTES)) or int(declared) > MAX_RESPONSE_BYTES):
            raise ApiMalformedResponse(too_large)
        inflater = _inflater(response.headers.get("Content-Encoding", ""))
        chunks, size = [], 0
        for raw in response.iter_raw(READ_CHUNK_BYTES):
            while raw:
                if inflater is None:
                    chunk, raw = raw, b""
                else:
                    try:  # at most one byte past the cap: enough to know it is passed
                        chunk = inflater.decompress(raw, min(INFLATE_STEP_BYTES, MAX_RESPONSE_BYTES - size + 1))
                    except zlib.error as exc:
                        raise ApiMalformedResponse(f"malformed API response: cannot decode the body "
                                                   f"({exc})") from None
                    raw = inflater.unconsumed_tail
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise ApiMalformedResponse(too_large)
                chunks.append(chunk)
        return b"".join(chunks)

    def _raise_for_status(self, response, content: bytes) -> None:
        status = response.status_code
        if status == 200:
            return
        message = _server_message(response, content)
        model, where = self.model, url_for_display(self.api_url)
        if status == 401:
            raise ApiFatalError(f"the API key was refused by {where} (401: {message}); "
                                "check $ROBOFLOW_API_KEY or api.api_key_file", status)
        if status == 402:
            raise ApiFatalError(f"the workspace is out of credits (402: {message}); add credits or use "
                                "a self-hosted inference server", status)
        if status == 403:
            raise ApiFatalError(f"the API key may not use model {model} or its quota is used up "
                                f"(403: {message})", status)
        if status == 404:
            raise ApiFatalError(f"model {model} was not found at {where} (404: {message}); "
                                "check --model PROJECT/VERSION", status)
        if status == 423:
            raise ApiFatalError(f"API usage is paused for this workspace (423: {message})", status)
        if 300 <= status < 400:
            target = self._redirect_base(response.headers.get("Location", ""))
            raise ApiFatalError(f"{where} redirects ({status}) elsewhere: set --api-url (api.url) to {target}",
                                status)
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise ApiTransientError(f"{where} answered {status}: {message}", status, retry_after)
        raise ApiBadRequest(f"{where} refused the request ({status}: {message})", status)

    def _redirect_base(self, location: str) -> str:
        """The API base URL a redirect points to: its origin and path prefix, without the
        model id and the query (which would carry the key)."""
        target = urlsplit(urljoin(self.endpoint, location))
        path = target.path
        if path.rstrip("/").endswith("/" + self.model):
            path = path.rstrip("/")[: -len(self.model) - 1]
        return url_for_display(urlunsplit((target.scheme, target.netloc, path, "", ""))) or "?"

    def _parse(self, content: bytes) -> Parsed:
        if not content or content.isspace():
            raise ApiMalformedResponse("malformed API response: the body is empty")
        try:
            data = json.loads(content)
        except RecursionError:  # a few hundred thousand "[" are enough
            raise ApiMalformedResponse("malformed API response: JSON nested too deeply to read") from None
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of 4300+ digits
            snippet = _snippet(content)
            if content.lstrip()[:1] == b"<":  # a proxy's or captive portal's page, mostly
                raise ApiMalformedResponse(f"malformed API response: an HTML page, not JSON (the body "
                                           f"starts {snippet!r})") from None
            if isinstance(exc, json.JSONDecodeError):
                reason = f"{exc.msg.removesuffix(' at')} at character {exc.pos}"
            else:
                reason = str(exc).split(";")[0][:100]
            raise ApiMalformedResponse(f"malformed API response: not JSON ({reason}; the body starts "
                                       f"{snippet!r})") from None
        return parse_response(data)

    def close(self) -> None:
        """Close the connection pool; safe to call more than once."""
        if not self._closed:
            self._closed = True
            if self._pool is not None:
                self._pool.close()
            if self._http is not None:
                self._http.close()

    def __enter__(self) -> "DetectionClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DetectionClient", "ApiError", "BODY_CONTENT_TYPE"]
