"""The exception tree, and the exit code each branch maps to.

    StreamerError                  base; exit 1 unless a subclass says otherwise
    ├── UsageError                 exit 2: bad command line or input file
    │   └── ConfigError            exit 2: a config key or value is refused
    ├── SourceError                exit 1: the video source cannot be opened or read
    ├── OutputError                exit 1: an output file cannot be written (a full disk)
    ├── Interrupted                exit 130: Ctrl-C/SIGTERM cut a one-shot job (predict, video) short
    └── ApiError                   any failure talking to the detection API
        ├── ApiFatalError          exit 2: 401/402/403/404/423, retrying cannot help
        ├── ApiBadRequest          400 (and other 4xx): skip this frame
        ├── ApiTransientError      429, 5xx, timeout, connection error: back off
        └── ApiMalformedResponse   the body is not a valid response: skip this frame

Third-party errors (httpx, cv2, yaml) are mapped to these once, at the boundary,
with ``raise ... from exc``.  Messages never contain a secret: see ``redact``.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class StreamerError(Exception):
    """Base class of every error streamer raises on purpose."""

    exit_code = EXIT_FAILURE


class UsageError(StreamerError):
    """The command line or an input named on it cannot be used."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A configuration key or value is refused; the message names the key path."""


class Interrupted(StreamerError):
    """A one-shot command (predict, video) was stopped by a signal before it finished."""

    exit_code = 130


class SourceError(StreamerError):
    """The video source could not be opened or stopped delivering frames."""


class OutputError(StreamerError):
    """An output (the JSONL file) could not be written while running."""


class ApiError(StreamerError):
    """A request to the detection API failed."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ApiFatalError(ApiError):
    """The API refused us in a way that retrying cannot fix (key, credits, model id)."""

    exit_code = EXIT_USAGE


class ApiBadRequest(ApiError):
    """The API rejected this one request (bad image, 400): skip the frame."""


class ApiTransientError(ApiError):
    """A failure worth retrying later: 429, 5xx, timeout, connection refused."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        retry_after_s: float | None = None,
        kind: str | None = None,
        unsent: bool = False,
    ):
        super().__init__(message, status)
        self.retry_after_s = retry_after_s
        # What failed, for the counters: "http 503", "timeout", "unreachable" ...
        self.kind = kind or (f"http {status}" if status else "unreachable")
        # No connection was made (refused, reset while connecting, no route): the request never
        # reached the API, so trying again costs nothing, and is billed nothing.
        self.unsent = unsent


class ApiMalformedResponse(ApiError):
    """The API answered 200 with a body that is not a valid detection response."""
