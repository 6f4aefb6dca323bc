"""Keep secrets (the API key, camera passwords) out of every log line and message."""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"

_lock = threading.Lock()
_secrets: set[str] = set()

# user:password@ in any URL-looking text, and api_key=... in query strings.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
_KEY_PARAM = re.compile(r"(?P<name>api_key=)[^&\s\"']+")
# user:password@host without a scheme in front (a mistyped "rtsp//user:pw@cam"), after a
# separator, so that "12:30@" in running text is not taken for one.
_BARE_USERINFO = re.compile(r"(?P<pre>^|[\s'\"(/=])(?P<user>[\w.%+-]+):(?P<pw>[^@/\s:'\"]+)@(?=[\w\[])")
# The credential properties of GStreamer's network sources in a gst: pipeline (rtspsrc and
# souphttpsrc: user-pw, proxy-pw; srtsrc: passphrase), written as GStreamer's parser reads them:
# spaces allowed around "=", a bare value runs to the next space ("!" included), a quoted one
# may hold escaped quotes.
GST_VALUE = r"""(?:"(?P<dq>(?:[^"\\]|\\.)*)"|'(?P<sq>(?:[^'\\]|\\.)*)'|(?P<bare>(?:\\.|\S)+))"""
_GST_PW = re.compile(r"(?P<key>\b(?:user-pw|proxy-pw|passphrase)\s*=\s*)" + GST_VALUE)
# Where a gst: pipeline names a URL, which may hold user:password@ (quoted, with spaces).
_GST_URL = re.compile(r"(?:^|\s)(?:location|uri|proxy)\s*=\s*" + GST_VALUE)
_ESCAPED = re.compile(r"\\(.)")


def gst_value(match: re.Match) -> str:
    """The value of a property matched with ``GST_VALUE``, as GStreamer reads it."""
    raw = next(v for v in (match["dq"], match["sq"], match["bare"]) if v is not None)
    return _ESCAPED.sub(r"\1", raw)


def register_secret(secret: str | None) -> None:
    """Remember a secret so that ``scrub`` removes it from any text from now on."""
    if secret and len(secret) >= 3:
        with _lock:
            _secrets.add(secret)


def scrub(text: str) -> str:
    """Return text with registered secrets, URL passwords and api_key values masked."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _BARE_USERINFO.sub(lambda m: f"{m['pre']}{m['user']}:{MASK}@", text)
    text = _KEY_PARAM.sub(lambda m: f"{m['name']}{MASK}", text)
    text = _GST_PW.sub(lambda m: f"{m['key']}{MASK}", text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


# Keys whose values are credentials when a camera takes them in the URL, e.g.
# ?user=admin&pwd=... or /user=admin&password=...&channel=1 (a common DVR form).
_SECRET_KEY = re.compile(
    r"(?i)^(user(name)?|usr|login|pass(word|wd)?|pwd|psw|loginpas\w*|token|"
    r"(api_?)?key|auth\w*|sig(nature)?|secret|session\w*|credentials?)$"
)
_USER_KEY = re.compile(r"(?i)^(user(name)?|usr|login)$")  # masked in URLs, but a name, not a secret
_KEY_VALUE = re.compile(r"(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)=(?P<value>[^&;/?#]*)")


def _mask_secret_values(text: str) -> str:
    return _KEY_VALUE.sub(lambda m: f"{m['key']}={MASK}" if _SECRET_KEY.match(m["key"]) else m[0], text)


def register_url_secrets(url: str) -> None:
    """Register the password of a URL, and the values of its credential-like keys, as
    secrets: they are then masked wherever they appear, not only inside the URL."""
    if url.startswith("gst:"):  # a pipeline: its password properties, and the URLs it names
        for match in _GST_PW.finditer(url):
            register_secret(gst_value(match))
        for match in _GST_URL.finditer(url):
            register_url_secrets(gst_value(match))
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return
    if not password:  # no scheme, or a mistyped one: look for user:password@ anyway
        bare = _BARE_USERINFO.search(url)
        password = bare["pw"] if bare else None
    found = [password] if password else []
    for text in (parts.path, parts.query):
        found += [
            m["value"]
            for m in _KEY_VALUE.finditer(text)
            if _SECRET_KEY.match(m["key"]) and not _USER_KEY.match(m["key"])
        ]
    for secret in found:  # as written and as decoded (%40 is @)
        register_secret(secret)
        register_secret(unquote(secret))


def url_for_display(url: str) -> str:
    """A URL fit for a log line: the password masked, and the values of credential-like
    keys (user, pwd, token ...) in the path or query; other values (channel=2) are kept
    so that two cameras can still be told apart."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub(url)
    netloc = parts.netloc
    if parts.password is not None:
        host = netloc.rsplit("@", 1)[1]
        netloc = f"{parts.username}:{MASK}@{host}"
    path, query = _mask_secret_values(parts.path), _mask_secret_values(parts.query)
    return scrub(urlunsplit((parts.scheme, netloc, path, query, "")))


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs the fully formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        clean = scrub(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks are formatted later; fold them in now so they are scrubbed too.
            clean += "\n" + scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
            record.exc_text = None
        record.msg = clean
        record.args = None
        return True
