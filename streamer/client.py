"""The HTTP client for a Roboflow-compatible detection API (see roboflow-api.md).

One persistent ``httpx.Client`` with timeouts on; every failure is mapped once,
here, to the ``ApiError`` tree so callers decide skip / back off / stop.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from streamer import __version__
from streamer.backoff import parse_retry_after
from streamer.errors import (ApiBadRequest, ApiError, ApiFatalError, ApiMalformedResponse,
                             ApiTransientError)
from streamer.predictions import Parsed, parse_response
from streamer.redact import register_secret, scrub, url_for_display

log = logging.getLogger(__name__)

# The API reads the raw body as base64 whatever this says, but 400s without one.
BODY_CONTENT_TYPE = "application/x-www-form-urlencoded"
MAX_RESPONSE_BYTES = 32 * 1024 * 1024


def _server_message(response: httpx.Response, body: bytes) -> str:
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
                 max_connections: int = 4, transport: httpx.BaseTransport | None = None):
        register_secret(api_key)
        self.api_url = api_url.rstrip("/")
        self.model = model
        self._api_key = api_key
        self.confidence = confidence
        self.overlap = overlap
        self.timeout_s = timeout_s
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"User-Agent": f"streamer/{__version__}"},
            transport=transport,
        )
        self._closed = False

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
        params = self._params(image=image_url, format=None if fmt == "json" else fmt)
        headers = {"Content-Type": BODY_CONTENT_TYPE} if body is not None else {}
        where = url_for_display(self.endpoint)
        try:
            with self._http.stream("POST", self.endpoint, params=params, content=body, headers=headers) as response:
                content = self._read_capped(response)
        except httpx.TimeoutException as exc:
            raise ApiTransientError(f"{where} did not answer within its timeout ({exc.__class__.__name__})") from None
        except httpx.DecodingError as exc:
            raise ApiMalformedResponse(f"malformed API response: cannot decode the body ({exc.__class__.__name__})") from None
        except httpx.HTTPError as exc:  # connection refused or reset, protocol errors
            raise ApiTransientError(f"cannot reach {where}: {scrub(str(exc)) or exc.__class__.__name__}") from None
        self._raise_for_status(response, content)
        return content

    def _read_capped(self, response: httpx.Response) -> bytes:
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise ApiMalformedResponse(f"response from {url_for_display(self.endpoint)} is larger than "
                                           f"{MAX_RESPONSE_BYTES // 2**20} MiB; skipped")
            chunks.append(chunk)
        return b"".join(chunks)

    def _raise_for_status(self, response: httpx.Response, content: bytes) -> None:
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
        try:
            data = json.loads(content)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            snippet = scrub(content[:60].decode("utf-8", "replace"))
            raise ApiMalformedResponse(f"malformed API response: not JSON (starts {snippet!r})") from None
        return parse_response(data)

    def close(self) -> None:
        """Close the connection pool; safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._http.close()

    def __enter__(self) -> "DetectionClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["DetectionClient", "ApiError", "BODY_CONTENT_TYPE"]
