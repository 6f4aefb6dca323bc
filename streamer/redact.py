"""Keep secrets (the API key, camera passwords) out of every log line and message."""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

_lock = threading.Lock()
_secrets: set[str] = set()

# user:password@ in any URL-looking text, and api_key=... in query strings.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
_KEY_PARAM = re.compile(r"(?P<name>api_key=)[^&\s\"']+")


def register_secret(secret: str | None) -> None:
    """Remember a secret so that ``scrub`` removes it from any text from now on."""
    if secret and len(secret) >= 3:
        with _lock:
            _secrets.add(secret)


def scrub(text: str) -> str:
    """Return text with registered secrets, URL passwords and api_key values masked."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _KEY_PARAM.sub(lambda m: f"{m['name']}{MASK}", text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def url_for_display(url: str) -> str:
    """A URL fit for a log line: the password and every query value masked (cheap IP
    cameras take credentials as ?user=...&pwd=...), the names of the query keys kept."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub(url)
    netloc = parts.netloc
    if parts.password is not None:
        host = netloc.rsplit("@", 1)[1]
        netloc = f"{parts.username}:{MASK}@{host}"
    query = "&".join(f"{item.split('=', 1)[0]}={MASK}" if "=" in item else item
                     for item in parts.query.split("&")) if parts.query else ""
    return scrub(urlunsplit((parts.scheme, netloc, parts.path, query, "")))


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs the fully formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks are formatted later; fold them in now so they are scrubbed too.
            formatter = logging.Formatter()
            clean = clean + "\n" + scrub(formatter.formatException(record.exc_info))
            record.exc_info = None
            record.exc_text = None
        record.msg = clean
        record.args = None
        return True
