"""Secrets: the API key, the web page's token and the broker password, each found one way:
its value (a config key or an environment variable), the file a config key names, then its
systemd credential in $CREDENTIALS_DIRECTORY.  Each is registered with ``redact`` once read."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.errors import ConfigError
from streamer.redact import register_secret

if TYPE_CHECKING:
    from streamer.config import Config

CREDENTIAL_NAME = "roboflow_api_key"  # systemd LoadCredential= name of the API key


@dataclass(frozen=True)
class Secret:
    """Where a secret may be set: ``value`` is a key path, or $VARIABLE read when it is asked for;
    ``file`` the key path of a file holding it; ``credential`` the systemd LoadCredential= name."""

    value: str
    file: str
    credential: str
    what: str


API_KEY = Secret("api.api_key", "api.api_key_file", CREDENTIAL_NAME, "the API key")
HTTP_TOKEN = Secret("output.http_token", "output.http_token_file", "http_token", "the token")
MQTT_PASSWORD = Secret("$STREAMER_MQTT_PASSWORD", "mqtt.password_file", "mqtt_password", "the broker password")


def _value(config: Config, path: str, env: Mapping[str, str]) -> Any:
    return env.get(path[1:]) if path.startswith("$") else functools.reduce(getattr, path.split("."), config)


def _credential(name: str, env: Mapping[str, str]) -> Path | None:
    path = Path(env["CREDENTIALS_DIRECTORY"]) / name if env.get("CREDENTIALS_DIRECTORY") else None
    return path if path is not None and path.is_file() else None


def secret_is_set(config: Config, secret: Secret, env: Mapping[str, str]) -> bool:
    """Whether the secret is set anywhere (its file is not read)."""
    return bool(
        _value(config, secret.value, env) or _value(config, secret.file, env) or _credential(secret.credential, env)
    )


def resolve_secret(config: Config, secret: Secret, env: Mapping[str, str] | None = None) -> str | None:
    """The secret from (in order) its value, its file or its systemd credential, stripped and
    registered with ``redact``; None if none is set.  A file that is unreadable or empty is refused."""
    env = os.environ if env is None else env
    found = _value(config, secret.value, env)
    file = _value(config, secret.file, env)
    if not found and file:
        found = _read_secret_file(Path(file), secret.file, secret.what)
    credential = None if found else _credential(secret.credential, env)
    if credential is not None:
        found = _read_secret_file(credential, "systemd credential " + secret.credential, secret.what)
    found = found.strip() if found else None
    register_secret(found)
    return found or None


def _read_secret_file(path: Path, what: str, secret: str) -> str:
    """The secret a file holds (stripped); ``what`` names the key or credential.  The caller,
    resolve_secret, registers it."""
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    if not key:
        raise ConfigError(f"{what}: {path} is empty; put {secret} in it")
    return key
