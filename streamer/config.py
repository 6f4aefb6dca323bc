"""Configuration: the schema of every key, the YAML file, the environment and flags, validated strictly.

Precedence is flags > environment > file > defaults.  Each key is declared once, in the schema
below: its default, its check and, where it has one, its command-line flag (name, metavar, help),
from which ``commands/options.py`` makes the argparse flags and their help, defaults included.
Loading checks each value, then the keys against each other (``_problems``); only a check that
needs a live resource (a port, a file's contents, the broker, the cv2 build) stays where that
resource is used.  Every refusal is one ``ConfigError`` line that names the key path, what is
wrong, where the value came from (the file, ``$ROBOFLOW_API_KEY`` or the flag) and how to fix it,
with "did you mean" for a mistyped key.  ``credentials.py`` finds the secrets the keys name.

The validator is written by hand, not with pydantic or msgspec, because those error lines are the
feature: a library's errors give the key path but not which of the merged sources the value came
from, and no "did you mean"; translating them back into these lines would take about as much code
as the checks, plus a compiled dependency streamer does not otherwise need.
``config.yaml`` at the repository root documents every key.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from streamer import gstspec
from streamer.credentials import HTTP_TOKEN, MQTT_PASSWORD, secret_is_set
from streamer.errors import ConfigError
from streamer.names import slug, source_kind
from streamer.redact import register_secret, register_url_secrets, url_for_display

API_KEY_ENV = "ROBOFLOW_API_KEY"
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[0-9]+$")


# --- value checks: each returns the cleaned value or raises ValueError(reason) ---


def _number(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    integer: bool = False,
    optional: bool = False,
) -> Callable[[Any], Any]:
    what = "a whole number" if integer else "a number"
    if lo is not None and hi is not None:
        what += f" {'above' if lo_open else 'from'} {lo:g} {'and at most' if lo_open else 'to'} {hi:g}"
    elif lo is not None:
        what += f" {'above' if lo_open else 'of at least'} {lo:g}"
    if optional:
        what += " (or null)"

    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (integer and not (isinstance(value, int) or float(value).is_integer()))
            or not math.isfinite(value)
            or (lo is not None and (value <= lo if lo_open else value < lo))
            or (hi is not None and value > hi)
        ):
            raise ValueError(f"expected {what}")
        return int(value) if integer else float(value)

    return check


def _fraction(value: Any) -> float:
    # The API reads any value >= 1 as a percentage (1 means 1 %), so 1 itself is refused.
    what = "expected a fraction from 0 up to (not including) 1"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 1 <= value <= 100:
        raise ValueError(f"{what} (for {value:g} % write {value / 100:g})")
    try:
        return _number(0.0, 1.0)(value)
    except ValueError:
        raise ValueError(what) from None


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _text(optional: bool = False) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not optional:
            return str(value)  # "source: 0" is a webcam index written without quotes
        if not isinstance(value, str):
            raise ValueError("expected a string" + (" (or null)" if optional else ""))
        if not value.strip():
            raise ValueError("expected a non-empty string")
        return value

    return check


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return value

    check.choices = choices  # type: ignore[attr-defined]  (the generated flag offers them)
    return check


def _string_list(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
        if not value:
            raise ValueError("expected class names separated by commas")
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError("expected a list of class names")
    return list(value)


def _api_url(value: Any) -> str:
    parts = urlsplit(value if isinstance(value, str) else "")  # not a string: refused as an empty URL
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s) URL such as https://detect.roboflow.com")
    if parts.username or parts.password or parts.query:
        raise ValueError(
            "the URL must carry no user, password or query; put the key in api.api_key_file or $" + API_KEY_ENV
        )
    return value.rstrip("/")


def _source_uri(value: Any) -> str:
    value = _text()(value)
    if gstspec.is_pipeline(value):
        if problem := gstspec.pipeline_problem(value):
            raise ValueError(problem)
        return value
    parts = urlsplit(value)
    # udp:// and tcp:// may name only a port to listen on (udp://@:1234); these must name a host.
    if parts.scheme.lower() in ("rtsp", "rtsps", "rtmp", "http", "https") and "://" in value:
        try:
            _ = parts.port  # urllib checks the port only when asked
        except ValueError:
            raise ValueError("expected a stream URL whose port is a number") from None
        if not parts.hostname:
            raise ValueError("expected a stream URL with a host, e.g. rtsp://user:pass@192.168.1.10:554/stream")
    return value


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not pattern.match(value):
            raise ValueError(f"expected {what}")
        return value

    return check


def zmq_endpoint(value: Any) -> str:
    """A --zmq or --connect value as a ZeroMQ endpoint: a bare port means tcp://127.0.0.1:PORT.
    Raises ValueError(what is expected)."""
    what = (
        "expected a port (5555 means tcp://127.0.0.1:5555) or a ZeroMQ endpoint such as "
        "tcp://127.0.0.1:5555 or ipc:///tmp/streamer"
    )
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,6}", value.strip()):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return f"tcp://127.0.0.1:{value}"  # a bare port stays on this machine
    if not isinstance(value, str) or not re.match(r"^(tcp://[^\s:]+:[0-9]+|ipc://\S+)$", value):
        raise ValueError(what)  # a port out of range too (not a string)
    return value


def zmq_endpoint_is_local(endpoint: str) -> bool:
    """True if only this machine can connect: ipc://, or tcp:// on localhost or 127.0.0.0/8.

    Anything else (0.0.0.0, *, a LAN address, an interface or host name) may be reachable
    from the network."""
    return endpoint.startswith("ipc://") or host_is_local(endpoint.removeprefix("tcp://").rsplit(":", 1)[0])


def _http_bind(value: Any) -> str | None:
    """[HOST:]PORT as "host:port"; a bare port means 127.0.0.1 (port 0: any free port)."""
    what = "expected [HOST:]PORT such as 8080 (this machine only), 127.0.0.1:8080 or 0.0.0.0:8080"
    text = str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    found = re.fullmatch(r"(?:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?([0-9]{1,5})", text)
    if not found or int(found[2]) > 65535:
        raise ValueError(what)
    return f"{found[1] or '127.0.0.1'}:{int(found[2])}"


def split_bind(bind: str) -> tuple[str, int]:
    """("host", port) of a value _http_bind returned; an IPv6 host loses its brackets."""
    host, _, port = bind.rpartition(":")
    return host.strip("[]"), int(port)


def host_is_local(host: str) -> bool:
    """True if only this machine can connect to a socket bound on host."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _path(suffixes: tuple[str, ...] = (), what: str = "a file path") -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected {what} (or null)")
        if suffixes and not value.lower().endswith(suffixes):
            raise ValueError("expected a file name ending in " + " or ".join(suffixes))
        return value

    return check


def _mqtt_url(value: Any) -> str | None:
    what = "expected mqtt://[user@]host[:port] or mqtts://[user@]host[:port]"
    parts = urlsplit(value if isinstance(value, str) else "")  # not a string: refused as an empty URL
    try:
        _ = parts.port  # urllib checks the port only when asked
    except ValueError:
        raise ValueError(what + " whose port is a number") from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ValueError(what)
    if parts.password is not None:
        raise ValueError(
            "the URL must carry no password (others would see it in ps and logs); "
            "set $STREAMER_MQTT_PASSWORD or mqtt.password_file"
        )
    return value


def _mqtt_protocol(value: Any) -> str:
    if str(value) not in ("3.1.1", "5"):
        raise ValueError("expected 3.1.1 or 5")
    return str(value)


def _topic_prefix(value: Any) -> str:
    if not isinstance(value, str) or not value.strip("/") or any(c in value for c in "+#\0") or value[0] == "$":
        raise ValueError("expected a topic such as streamer/front-door, without + # or a NUL, not starting with $")
    return value.strip("/")


def _camera_name(value: Any) -> str | None:
    """A camera name, made a slug ([a-z0-9_-], at most 64 characters): it is part of topics."""
    name = slug(str(value)) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    if not name:
        raise ValueError("expected a name with letters or digits, such as front-door")
    return name


@dataclass(frozen=True)
class Flag:
    """The command-line flag that sets a config key.  The CLI is generated from these: the
    flag's type comes from the key's annotation, and its help ends with the key's default."""

    group: str  # the heading it is listed under in --help
    name: str
    metavar: str | None
    help: str


SOURCE, API, RATE, OUTPUT, LOGGING = "source", "detection API", "request rate", "output", "logging"


def opt(default: Any, check: Callable[[Any], Any], flag: Flag | None = None) -> Any:
    """A config field: its default, its check and the command-line flag that sets it."""
    meta = {"check": check, "flag": flag}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class SourceConfig:
    uri: str = opt(
        "0",
        _source_uri,
        Flag(
            SOURCE,
            "--source",
            "SRC",
            "webcam index (0), /dev/videoN, rtsp:// or http(s):// URL, video file, 'synthetic', "
            "or 'gst:PIPELINE', a GStreamer pipeline ending in appsink",
        ),
    )
    rtsp_transport: str = opt("tcp", _choice("tcp", "udp"))
    open_timeout_s: float = opt(5.0, _number(0, 120, lo_open=True))
    read_timeout_s: float = opt(2.0, _number(0, 120, lo_open=True))
    queue_size: int = opt(1, _number(1, 64, integer=True))
    loop: bool = opt(False, _boolean)
    reconnect_initial_s: float = opt(0.5, _number(0, 60, lo_open=True))
    reconnect_max_s: float = opt(1.0, _number(0, 3600, lo_open=True))
    stall_timeout_s: float = opt(10.0, _number(0, 3600, lo_open=True))
    # Webcams only: the mode to ask for (null: the camera's default).
    width: int | None = opt(None, _number(1, 7680, integer=True, optional=True))
    height: int | None = opt(None, _number(1, 4320, integer=True, optional=True))
    fps: float | None = opt(None, _number(0, 1000, lo_open=True, optional=True))
    fourcc: str | None = opt(
        None, _matching(re.compile(r"[ -~]{4}\Z"), "a four-character code such as MJPG or YUYV (or null)")
    )


@dataclass(frozen=True)
class SyntheticConfig:
    width: int = opt(1280, _number(64, 7680, integer=True))
    height: int = opt(720, _number(64, 4320, integer=True))
    fps: float = opt(30.0, _number(0, 240, lo_open=True))


@dataclass(frozen=True)
class ApiConfig:
    url: str = opt("https://detect.roboflow.com", _api_url, Flag(API, "--api-url", "URL", "API base URL"))
    model: str | None = opt(
        None,
        _matching(MODEL_ID, "a model id PROJECT/VERSION such as hard-hat-sample/2"),
        Flag(API, "--model", "PROJECT/VERSION", "model id, e.g. hard-hat-sample/2"),
    )
    api_key: str | None = opt(
        None,
        _text(optional=True),
        Flag(API, "--api-key", "KEY", "API key; prefer $ROBOFLOW_API_KEY: a flag is visible to every user in ps"),
    )
    api_key_file: str | None = opt(None, _path())
    connect_timeout_s: float = opt(5.0, _number(0, 120, lo_open=True))
    timeout_s: float = opt(10.0, _number(0, 600, lo_open=True))
    backoff_initial_s: float = opt(0.5, _number(0, 60, lo_open=True))
    backoff_max_s: float = opt(30.0, _number(0, 3600, lo_open=True))
    http2: bool = opt(False, _boolean)
    probe_after_failures: int = opt(3, _number(1, 1000, integer=True))


@dataclass(frozen=True)
class InferenceConfig:
    confidence: float = opt(0.4, _fraction, Flag(API, "--confidence", "0-1", "minimum confidence"))
    overlap: float = opt(0.3, _fraction, Flag(API, "--overlap", "0-1", "NMS overlap threshold"))
    classes: list = opt([], _string_list, Flag(API, "--classes", "A,B", "keep only these classes (comma separated)"))
    max_side: int = opt(
        640, _number(32, 8192, integer=True), Flag(API, "--max-side", "PX", "longest side of the upload")
    )
    jpeg_quality: int = opt(75, _number(1, 100, integer=True))
    max_in_flight: int = opt(
        2, _number(1, 16, integer=True), Flag(RATE, "--max-in-flight", "N", "requests in flight at once")
    )
    max_fps: float | None = opt(
        2.0,
        _number(0, 1000, optional=True),
        Flag(RATE, "--max-fps", "CALLS", "at most this many API calls a second; 0: no cap"),
    )
    min_change: float = opt(
        0.0,
        _number(0, 1),
        Flag(RATE, "--min-change", "0-1", "skip the call when the frame changed less than this; 0: off"),
    )
    budget_calls: int | None = opt(None, _number(1, 10**9, integer=True, optional=True))
    budget_period: str = opt("hour", _choice("hour", "day"))


@dataclass(frozen=True)
class OutputConfig:
    headless: bool = opt(False, _boolean, Flag(OUTPUT, "--headless", None, "never open a window"))
    window_title: str = opt("streamer", _text())
    zmq: str | None = opt(
        None,
        zmq_endpoint,
        Flag(
            OUTPUT,
            "--zmq",
            "ENDPOINT",
            "publish detections on a ZeroMQ endpoint, e.g. tcp://127.0.0.1:5555, or just a port "
            "(5555: this machine only)",
        ),
    )
    zmq_topic: str = opt("detections", _text())
    zmq_allow_remote: bool = opt(False, _boolean)
    zmq_curve_secret_key_file: str | None = opt(None, _path())
    zmq_curve_clients_dir: str | None = opt(None, _path(what="a folder path"))
    jsonl: str | None = opt(None, _path(), Flag(OUTPUT, "--jsonl", "FILE", "append each message to FILE, one per line"))
    record: str | None = opt(
        None, _path((".mp4", ".avi")), Flag(OUTPUT, "--record", "FILE", "write the annotated video (.mp4 or .avi)")
    )
    status_interval_s: float | None = opt(None, _number(0, 3600, lo_open=True, optional=True))
    heartbeat_s: float = opt(2.0, _number(0, 3600, lo_open=True))
    zmq_status_topic: str = opt("status", _text())
    jsonl_max_mb: float = opt(100.0, _number(0, 10**6))
    jsonl_keep: int = opt(3, _number(0, 1000, integer=True))
    record_segment_s: float = opt(0.0, _number(0, 86400))
    record_max_mb: float = opt(0.0, _number(0, 10**7))
    http: str | None = opt(
        None,
        _http_bind,
        Flag(
            OUTPUT,
            "--http",
            "[HOST:]PORT",
            "serve the live page, health and metrics on HOST:PORT; a bare port: 127.0.0.1 only, port 0: any free one",
        ),
    )
    http_allow_remote: bool = opt(False, _boolean)
    http_auth: str = opt("token", _choice("token", "none"))
    http_token: str | None = opt(None, _text(optional=True))
    http_token_file: str | None = opt(None, _path())
    http_fps: float = opt(10.0, _number(0, 60, lo_open=True))
    http_max_side: int = opt(960, _number(64, 8192, integer=True))
    http_jpeg_quality: int = opt(80, _number(1, 100, integer=True))
    http_health_max_age_s: float = opt(30.0, _number(0, 86400, lo_open=True))


@dataclass(frozen=True)
class MqttConfig:
    url: str | None = opt(
        None,
        _mqtt_url,
        Flag(
            OUTPUT,
            "--mqtt",
            "URL",
            "publish to an MQTT broker, mqtt://[user@]host[:port] or mqtts://...; the password comes from "
            "$STREAMER_MQTT_PASSWORD, mqtt.password_file or a systemd credential",
        ),
    )
    protocol: str = opt("3.1.1", _mqtt_protocol)
    prefix: str | None = opt(None, _topic_prefix)
    keepalive_s: int = opt(10, _number(5, 3600, integer=True))
    connect_timeout_s: float = opt(5.0, _number(0, 120, lo_open=True))
    qos: int = opt(0, _number(0, 2, integer=True))
    queue_size: int = opt(100, _number(1, 100000, integer=True))
    ca_file: str | None = opt(None, _path())
    cert_file: str | None = opt(None, _path())
    key_file: str | None = opt(None, _path())
    password_file: str | None = opt(None, _path())
    max_classes: int = opt(20, _number(1, 1000, integer=True))
    off_delay_s: float = opt(5.0, _number(0, 3600))
    snapshot_s: float = opt(10.0, _number(0, 86400))
    event_snapshot: bool = opt(True, _boolean)
    ha_discovery: bool = opt(False, _boolean)
    discovery_prefix: str = opt("homeassistant", _topic_prefix)


@dataclass(frozen=True)
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    name: str | None = opt(
        None,
        _camera_name,
        Flag(OUTPUT, "--name", "NAME", "camera name in messages and topics (default: from the source)"),
    )
    duration_s: float | None = opt(
        None,
        _number(0, lo_open=True, optional=True),
        Flag(OUTPUT, "--duration", "SECONDS", "stop after this many seconds"),
    )
    log_level: str = opt(
        "info", _choice("debug", "info", "warning", "error"), Flag(LOGGING, "--log-level", None, "how much to log")
    )


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _build(cls: type, data: dict, prefix: str, origin: dict[str, str]) -> Any:
    """Build one dataclass level from a mapping, refusing unknown keys and bad values."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            path = prefix + str(key)
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else "valid keys here: " + ", ".join(fields)
            raise ConfigError(f"{path}: unknown key{origin_note(origin, path)}; {hint}")
    values = {}
    for name, f in fields.items():
        path = prefix + name
        if dataclasses.is_dataclass(f.default_factory):
            sub = {} if data.get(name) is None else data[name]
            if not isinstance(sub, dict):
                raise ConfigError(f"{path}: expected a mapping of keys, got {_show(sub)}{origin_note(origin, path)}")
            values[name] = _build(f.default_factory, sub, path + ".", origin)
        elif name in data and (data[name] is not None or f.default is not None):  # null keeps a null default
            try:
                values[name] = f.metadata["check"](data[name])
            except ValueError as exc:
                value = data[name]
                if name in ("uri", "url") and isinstance(value, str):  # a camera or broker URL may carry a password
                    value = url_for_display(value)
                secret = ("api_key" in name and name != "api_key_file") or name == "http_token"
                raise ConfigError(
                    f"{path}: {exc}, got {'***' if secret else _show(value)}{origin_note(origin, path)}"
                ) from None
    return cls(**values)


def origin_note(origin: dict[str, str], path: str) -> str:
    where = origin.get(path) or origin.get("*")
    return f" (from {where})" if where else ""


def flags(cls: type = Config, prefix: str = "") -> Iterator[tuple[str, Any, Flag]]:
    """(key path, field, flag) of every key a command-line flag sets, in the schema's order
    (by default the whole schema; cls is a section of it and prefix its path, when it recurses)."""
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.default_factory):
            yield from flags(f.default_factory, prefix + f.name + ".")
        elif f.metadata.get("flag"):
            yield prefix + f.name, f, f.metadata["flag"]


def flag_for(path: str) -> str | None:
    """The command-line flag that sets a key path, if there is one."""
    return next((flag.name for key, _, flag in flags() if key == path), None)


def read_file(path: str | os.PathLike) -> dict:
    """Read a YAML config file into a mapping; every failure is one ConfigError line."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found; pass an existing file with -c or copy config.yaml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.__class__.__name__}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', None) or 'invalid syntax'}") from None
    if data is None:
        raise ConfigError(f"{p}: the config file is empty; put at least one key in it (config.yaml lists them all)")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def _set_path(data: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value


def load(
    path: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    need_model: bool = False,
) -> Config:
    """Merge defaults, file, environment and flag overrides (dotted key paths), validate each
    value, then the keys against each other.  ``need_model``: refuse a config without api.model."""
    env = os.environ if env is None else env
    data = {} if path is None else read_file(path)
    origin = {} if path is None else {"*": str(path)}  # where each key came from; "*": the file
    # The environment's API key, then the flags: each value with where it came from.
    given = [
        ("api.api_key", env.get(API_KEY_ENV) or None, "$" + API_KEY_ENV),
        *[(dotted, value, flag_for(dotted) or dotted) for dotted, value in (overrides or {}).items()],
    ]
    for dotted, value, where in given:
        if value is not None:
            _set_path(data, dotted, value)
            origin[dotted] = where
    # Before checking them: an error may quote the camera's URL; the broker's is refused below if
    # it holds a password, never shown.  The camera's password is then masked wherever it turns up
    # (the checked source.uri is this same string, or the default webcam, which holds none).
    for section, name in (("source", "uri"), ("mqtt", "url")):
        part = data.get(section)
        if isinstance(part, dict) and isinstance(part.get(name), str):
            register_url_secrets(part[name])
    config = _build(Config, data, "", origin)
    register_secret(config.api.api_key)
    register_secret(config.output.http_token)
    for key_path, problem, fix in _problems(config, env, need_model):
        raise ConfigError(f"{key_path}: {problem}{origin_note(origin, key_path)}; {fix}")
    return config


# --- checks of keys against each other: each problem is (key path, what is wrong, how to fix it) ---

WEBCAM_HINT = {
    "gst": "; put the caps in the pipeline instead (video/x-raw,width=...,height=...,framerate=...)",
    "synthetic": "; the synthetic scene's size is synthetic.width and synthetic.height",
}


def _problems(c: Config, env: Mapping[str, str], need_model: bool) -> Iterator[tuple[str, str, str]]:
    """What is wrong with the keys together, the first problem first."""
    if need_model and not c.api.model:
        yield (
            "api.model",
            "not set",
            "pass --model PROJECT/VERSION (e.g. hard-hat-sample/2) or set api.model in the config file",
        )
    if c.api.http2 and importlib.util.find_spec("h2") is None:
        yield "api.http2", "true needs the h2 package", "pip install 'httpx[http2]' or set api.http2: false"
    for section, low, high in (
        ("source", "reconnect_initial_s", "reconnect_max_s"),
        ("api", "backoff_initial_s", "backoff_max_s"),
    ):
        part = getattr(c, section)
        if getattr(part, high) < getattr(part, low):
            yield (
                f"{section}.{high}",
                f"{getattr(part, high):g} is below {section}.{low} ({getattr(part, low):g})",
                "make it at least as large",
            )
    kind = source_kind(c.source.uri)
    asked = next((k for k in ("width", "height", "fps", "fourcc") if getattr(c.source, k) is not None), None)
    if asked and kind != "webcam":
        yield (
            f"source.{asked}",
            f"applies to webcams only, and source.uri names a {kind} source",
            "remove it" + WEBCAM_HINT.get(kind, ""),
        )
    yield from _output_problems(c, env)
    yield from _mqtt_problems(c, env)


def _output_problems(c: Config, env: Mapping[str, str]) -> Iterator[tuple[str, str, str]]:
    out = c.output
    if out.zmq_topic.startswith(out.zmq_status_topic) or out.zmq_status_topic.startswith(out.zmq_topic):
        # ZeroMQ subscriptions match by prefix: one topic inside the other mixes the two feeds.
        yield (
            "output.zmq_status_topic",
            f"{out.zmq_status_topic!r} and output.zmq_topic {out.zmq_topic!r} must not be prefixes of each other "
            "(subscribers match topics by prefix)",
            "pick distinct names",
        )
    # A feed or a page other machines can reach must be asked for; key files are read when it binds.
    if out.zmq and not out.zmq_allow_remote and not zmq_endpoint_is_local(out.zmq):
        yield (
            "output.zmq",
            f"{out.zmq} can be reached from other machines",
            "bind tcp://127.0.0.1:PORT, or set output.zmq_allow_remote: true to publish to the network "
            "(and output.zmq_curve_secret_key_file to encrypt the feed with CURVE)",
        )
    if out.zmq_curve_clients_dir and not out.zmq_curve_secret_key_file:
        yield (
            "output.zmq_curve_clients_dir",
            "needs output.zmq_curve_secret_key_file (the publisher's own .key_secret)",
            "'streamer keygen DIR' writes one",
        )
    remote = bool(out.http) and not host_is_local(split_bind(out.http)[0])
    if remote and not out.http_allow_remote:
        yield (
            "output.http",
            f"{out.http} can be reached from other machines",
            "serve on 127.0.0.1:PORT (and reach it with ssh -L), or set output.http_allow_remote: true "
            "and a token (output.http_token_file)",
        )
    if remote and out.http_auth == "token" and not secret_is_set(c, HTTP_TOKEN, env):
        yield (
            "output.http",
            f"{out.http} can be reached from other machines and needs a token",
            "set output.http_token_file (or the systemd credential http_token), or output.http_auth: none",
        )
    if out.record and out.record_max_mb and not out.record_segment_s:
        yield (
            "output.record_max_mb",
            "needs output.record_segment_s (only whole segments are deleted)",
            "set record_segment_s, e.g. 600 for ten-minute files",
        )


def _mqtt_problems(c: Config, env: Mapping[str, str]) -> Iterator[tuple[str, str, str]]:
    """TLS files only with mqtts://, a client certificate with its key, a password with a user."""
    mq = c.mqtt
    for key in ("ca_file", "cert_file", "key_file"):
        if getattr(mq, key) and not (mq.url or "").startswith("mqtts://"):
            yield (
                f"mqtt.{key}",
                "set, but mqtt.url is not an mqtts:// URL",
                "use mqtts://HOST:8883 for TLS, or remove it",
            )
    if bool(mq.cert_file) != bool(mq.key_file):
        yield (
            "mqtt.cert_file",
            "a client certificate needs both mqtt.cert_file and mqtt.key_file",
            "set both, or neither",
        )
    if mq.url and not urlsplit(mq.url).username and secret_is_set(c, MQTT_PASSWORD, env):
        yield "mqtt.url", "a broker password is set but the URL names no user", "write mqtt://USER@HOST"
