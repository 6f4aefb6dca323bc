"""The JSONL file: one message a line."""

from __future__ import annotations

import logging
from typing import IO

from streamer.errors import OutputError, UsageError

log = logging.getLogger(__name__)


class JsonlWriter:
    """Appends one message per line, flushed, so a reader (or a crash) never sees half a line.

    A write that fails (a full disk, a removed USB stick) raises OutputError once, naming
    the file; the writer then stays quiet, since the run is stopping because of it."""

    def __init__(self, path: str, append: bool = True, what: str = "output.jsonl"):
        self.path = path
        self._what = what
        self._failed = False
        try:
            self._file: IO[bytes] | None = open(path, "ab" if append else "wb")
        except OSError as exc:
            raise UsageError(f"{what}: cannot open {path}: {exc.strerror or exc}") from None

    def send(self, payload: bytes) -> bool:
        if self._failed or self._file is None:
            return False
        try:
            self._file.write(payload + b"\n")
            self._file.flush()
        except OSError as exc:
            self._failed = True
            raise OutputError(f"{self._what}: cannot write {self.path}: {exc.strerror or exc}; free some "
                              "space or choose another file") from None
        return True

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()  # closes the descriptor even when its last flush fails
            except OSError as exc:
                if not self._failed:
                    log.warning("%s: the last lines of %s may be lost: %s", self._what, self.path,
                                exc.strerror or exc)
