"""The HTTP client for a Roboflow-compatible detection API (see docs/api.md).

One httpx.Client: a pool of keep-alive connections (HTTP/1.1, or HTTP/2 when asked for) with
separate connect, read, write and pool timeouts.  Proxies (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY,
NO_PROXY) and TLS roots (SSL_CERT_FILE or SSL_CERT_DIR, else certifi's) come from the
environment, as httpx reads it.  Every failure is mapped once, here, to the ``ApiError`` tree so
callers decide skip / back off / stop.
"""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
import urllib.request
import zlib
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from streamer import __version__
from streamer.api.responses import Parsed, parse_response
from streamer.errors import ApiBadRequest, ApiFatalError, ApiMalformedResponse, ApiTransientError, ConfigError
from streamer.redact import register_secret, scrub, url_for_display
from streamer.retry import parse_retry_after

log = logging.getLogger(__name__)

# The API reads the raw body as base64 whatever this says, but 400s without one.
BODY_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
READ_CHUNK_BYTES = 64 * 1024
INFLATE_STEP_BYTES = 1024 * 1024  # zlib builds its output twice over: keep each step small
ACCEPT_ENCODING = "gzip, deflate"  # the ones _read_capped inflates itself
# The phase each of httpx's timeouts names, in the message a user reads.
TIMEOUT_PHASES = {
    httpx.ConnectTimeout: "connect timeout",
    httpx.ReadTimeout: "read timeout",
    httpx.WriteTimeout: "write timeout",
    httpx.PoolTimeout: "pool timeout",
}


def proxy_for(url: str) -> str | None:
    """The proxy the environment sets for url (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY), or None,
    worked out here only to say so: httpx reads the same variables (through urllib) and routes
    by them.  The two agree but on an IPv6 address in NO_PROXY, which only httpx honours."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    return proxy if proxy and not urllib.request.proxy_bypass_environment(parts.netloc, proxies) else None


def _inflater(content_encoding: str):
    """A zlib decompressor for the body's Content-Encoding; None for an uncompressed body."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(zlib.MAX_WBITS | 32)  # +32: zlib or gzip header, detected
    raise ApiMalformedResponse(
        f"malformed API response: Content-Encoding {content_encoding[:40]!r} was not "
        f"asked for (we accept {ACCEPT_ENCODING})"
    )


def _unreachable(exc: httpx.HTTPError) -> str:
    """Why the API could not be reached: a refused TLS certificate said plainly, else httpx's
    reason.  httpx wraps the ssl module's error (in ConnectError) with ``raise ... from``, on
    HTTP/1.1 and HTTP/2 alike: it is found down the chain of causes."""
    cause: BaseException | None = exc
    for _ in range(8):  # a few links: httpx's error, httpcore's, the ssl module's
        if isinstance(cause, ssl.SSLCertVerificationError):
            return _certificate_problem(cause)
        cause = cause and (cause.__cause__ or cause.__context__)  # None once the chain ends
    return scrub(str(exc)) or exc.__class__.__name__


def _certificate_problem(exc: ssl.SSLCertVerificationError) -> str:
    """Why the server's TLS certificate was refused, and what to do about it."""
    reason = scrub(exc.verify_message or str(exc))
    if exc.verify_code in (9, 10):  # not yet valid, expired
        return (
            f"its TLS certificate is refused ({reason}); check this machine's clock (a board "
            "without a real-time clock needs NTP first), then the server's certificate"
        )
    if exc.verify_code in (62, 64):  # host name or IP address mismatch
        return f"its TLS certificate is for another name ({reason}); check the host in api.url"
    return (
        f"its TLS certificate is not trusted ({reason}); if it is signed by your own CA, "
        "set SSL_CERT_FILE to that CA's certificate file"
    )


def _server_message(response, body: bytes) -> str:
    try:
        data = json.loads(body)
        message = data.get("message") if isinstance(data, dict) else None
    except (ValueError, RecursionError):
        message = None
    if not isinstance(message, str) or not message:
        message = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    return scrub(" ".join(message.split())[:200])


# "Missing api_key" (a self-hosted server that needs one), "Invalid api_key", "Required Roboflow API
# key is missing", "Unauthorized access to roboflow API - check API key ..." (roboflow/inference's
# error_handlers.py), "This API key does not exist (or has been revoked)" (the hosted API).
_KEY_WORDS = re.compile(r"api[ _-]?key", re.IGNORECASE)
_KEY_PROBLEMS = re.compile(
    r"missing|invalid|not valid|unauthori[sz]ed|revoked|required|does not exist|not exist|incorrect|wrong",
    re.IGNORECASE,
)
KEY_HINT = "check $ROBOFLOW_API_KEY or api.api_key_file"
# The answers that retrying cannot help, beside a refused key (see _raise_for_status).
FATAL_STATUSES = {
    402: "the workspace is out of credits (402: {message}); add credits or use a self-hosted inference server",
    403: "the API key may not use model {model} or its quota is used up (403: {message})",
    404: "model {model} was not found at {where} (404: {message}); check --model PROJECT/VERSION",
    423: "API usage is paused for this workspace (423: {message})",
}


class DetectionClient:
    """Sends images to ``{api_url}/{model}`` and returns parsed responses."""

    def __init__(
        self,
        api_url: str,
        model: str,
        api_key: str | None,
        *,
        confidence: float = 0.4,
        overlap: float = 0.3,
        connect_timeout_s: float = 5.0,
        timeout_s: float = 10.0,
        max_connections: int = 4,
        http2: bool = False,
    ):
        """max_connections: how many requests may be outstanding at once (the pool's size);
        a request that finds none free waits for one up to connect_timeout_s."""
        register_secret(api_key)
        self.api_url = api_url.rstrip("/")
        self.model = model
        self._api_key = api_key
        self.confidence = confidence
        self.overlap = overlap
        self.timeout_s = timeout_s
        if proxy := proxy_for(self.api_url):
            log.info("API requests go through the proxy %s (from the environment)", url_for_display(proxy))
        try:
            self._http = httpx.Client(
                timeout=httpx.Timeout(
                    connect=connect_timeout_s, read=timeout_s, write=timeout_s, pool=connect_timeout_s
                ),
                limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
                http2=http2,
                trust_env=True,
                headers={"User-Agent": f"streamer/{__version__}", "Accept": "*/*", "Accept-Encoding": ACCEPT_ENCODING},
            )
        except OSError as exc:  # httpx loads $SSL_CERT_FILE here (ssl.SSLError is an OSError)
            raise ConfigError(
                f"SSL_CERT_FILE: cannot load {os.environ.get('SSL_CERT_FILE')!r} as CA certificates "
                f"({scrub(str(exc))}); point it at a PEM file of certificates, or unset it"
            ) from None
        self.endpoint = f"{self.api_url}/{self.model}"
        self._where = url_for_display(self.endpoint)  # for messages, worked out once

    def infer(self, body: bytes, read_timeout_s: float | None = None) -> Parsed:
        """POST one base64 JPEG body; return the parsed JSON response.  ``read_timeout_s``
        waits for the answer less long than ``timeout_s`` (a probe of an API that hangs)."""
        return self._parse(self.request(body=body, read_timeout_s=read_timeout_s))

    def infer_url(self, image_url: str) -> Parsed:
        """Ask the server to fetch ``image_url`` itself (the ``image=`` parameter)."""
        return self._parse(self.request(image_url=image_url))

    def request(
        self,
        body: bytes | None = None,
        image_url: str | None = None,
        fmt: str = "json",
        read_timeout_s: float | None = None,
    ) -> bytes:
        """Send one request and return the raw response body of a 200; raise ApiError otherwise."""
        timeout = self._http.timeout
        if read_timeout_s is not None:
            timeout = httpx.Timeout(
                connect=timeout.connect,
                read=min(read_timeout_s, self.timeout_s),
                write=timeout.write,
                pool=timeout.pool,
            )
        query = {
            "confidence": self.confidence,
            "overlap": self.overlap,
            "api_key": self._api_key or None,
            "image": image_url,
            "format": None if fmt == "json" else fmt,
        }
        params = {name: value for name, value in query.items() if value is not None}
        try:  # httpx refuses a closed client's request with a RuntimeError, before sending
            with self._http.stream(
                "POST",
                self.endpoint,
                params=params,
                content=body,
                headers={"Content-Type": BODY_CONTENT_TYPE} if body is not None else {},
                timeout=timeout,
            ) as response:
                content = self._read_capped(response)
        except httpx.TimeoutException as exc:
            raise ApiTransientError(
                f"{self._where} did not answer within its timeout ({TIMEOUT_PHASES.get(type(exc), 'timeout')})",
                kind="timeout",
            ) from None
        except httpx.HTTPError as exc:
            # A ConnectError (refused, reset or no route while connecting; TLS handshakes) sent
            # nothing; others: reset after sending, proxy and protocol errors.
            raise ApiTransientError(
                f"cannot reach {self._where}: {_unreachable(exc)}", unsent=isinstance(exc, httpx.ConnectError)
            ) from None
        except RuntimeError:  # httpx's word for a closed client (closed before, or meanwhile by another thread)
            if not self._http.is_closed:
                raise
            raise ApiTransientError(f"cannot reach {self._where}: the client is closed") from None
        self._raise_for_status(response, content)
        return content

    def _read_capped(self, response) -> bytes:
        """The body, refused as soon as it is known to pass the cap: at once when the
        Content-Length says so, else as the decoded bytes reach it.

        We read the raw bytes and inflate gzip/deflate ourselves, with a limit on each step:
        httpx inflates each 64 KiB read whole, and 64 KiB of gzip can hold 64 MiB (a gzip bomb)."""
        too_large = f"response from {self._where} is larger than {MAX_RESPONSE_BYTES // 2**20} MiB; skipped"
        declared = response.headers.get("Content-Length", "").lstrip("0")
        if (
            declared.isascii()
            and declared.isdigit()
            and (  # int() refuses 4300+ digits
                len(declared) > len(str(MAX_RESPONSE_BYTES)) or int(declared) > MAX_RESPONSE_BYTES
            )
        ):
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
                        raise ApiMalformedResponse(f"malformed API response: cannot decode the body ({exc})") from None
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
        # A 400 or 403 counts as a 401 when its message says the API key is missing or refused
        # (not merely quotes it).
        if status == 401 or (status in (400, 403) and _KEY_WORDS.search(message) and _KEY_PROBLEMS.search(message)):
            # A self-hosted server that needs a key answers 400 "Missing api_key": retrying
            # every frame for ever cannot help, so it is a configuration error like a 401.
            said = (
                f"{where} needs an API key and none was sent"
                if not self._api_key
                else f"the API key was refused by {where}"
            )
            raise ApiFatalError(f"{said} ({status}: {message}); {KEY_HINT}", status)
        if status in FATAL_STATUSES:
            raise ApiFatalError(FATAL_STATUSES[status].format(model=model, where=where, message=message), status)
        if 300 <= status < 400:
            target = self._redirect_base(response.headers.get("Location", ""))
            raise ApiFatalError(f"{where} redirects ({status}) elsewhere: set --api-url (api.url) to {target}", status)
        if status == 429 or status >= 500:
            raise ApiTransientError(
                f"{where} answered {status}: {message}", status, parse_retry_after(response.headers.get("Retry-After"))
            )
        raise ApiBadRequest(f"{where} refused the request ({status}: {message})", status)

    def _redirect_base(self, location: str) -> str:
        """The API base URL a redirect points to: its origin and path prefix, without the
        model id and the query (which would carry the key)."""
        target = urlsplit(urljoin(self.endpoint, location))
        trimmed = target.path.rstrip("/")
        path = trimmed.removesuffix("/" + self.model) if trimmed.endswith("/" + self.model) else target.path
        return url_for_display(urlunsplit((target.scheme, target.netloc, path, "", ""))) or "?"

    def _parse(self, content: bytes) -> Parsed:
        if not content or content.isspace():
            raise ApiMalformedResponse("malformed API response: the body is empty")
        try:
            data = json.loads(content)
        except RecursionError:  # a few hundred thousand "[" are enough
            raise ApiMalformedResponse("malformed API response: JSON nested too deeply to read") from None
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of 4300+ digits
            # The start of the body, fit for a one-line message: control characters as '?'.
            snippet = scrub("".join(c if c.isprintable() else "?" for c in content[:60].decode("utf-8", "replace")))
            if content.lstrip()[:1] == b"<":  # a proxy's or captive portal's page, mostly
                raise ApiMalformedResponse(
                    f"malformed API response: an HTML page, not JSON (the body starts {snippet!r})"
                ) from None
            reason = (
                f"{exc.msg.removesuffix(' at')} at character {exc.pos}"
                if isinstance(exc, json.JSONDecodeError)
                else str(exc).split(";")[0][:100]
            )
            raise ApiMalformedResponse(
                f"malformed API response: not JSON ({reason}; the body starts {snippet!r})"
            ) from None
        return parse_response(data)

    def close(self) -> None:
        """Close the connection pool; safe to call more than once (httpx's close is)."""
        self._http.close()

    def __enter__(self) -> DetectionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
