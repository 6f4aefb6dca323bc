"""What the commands share: logging set-up, the common options, and the config they build."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamer.config import API, Config, flags, load
from streamer.redact import RedactingFilter, register_secret

log = logging.getLogger("streamer")

DEFAULT_CONFIG = "config.yaml"


def setup_logging(level: str = "info") -> None:
    root = logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for h in root.handlers for f in h.filters):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler.addFilter(RedactingFilter())  # on the handler, so records from every logger pass it
        root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request (with its query string) at INFO: keep it to warnings.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "debug" else logging.DEBUG)


FLAGS = {path: (f, flag) for path, f, flag in flags()}  # key path (the argparse dest) -> schema entry
TYPES = {"int": int, "float": float}  # of a flag's value, from its key's annotation; others are strings


def command(
    sub: argparse._SubParsersAction, name: str, summary: str, func: Callable[..., int]
) -> argparse.ArgumentParser:
    """A subcommand that runs ``func(args, stop)``, whose help page opens with its summary, as
    the command list shows it."""
    p = sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")
    p.set_defaults(func=func)
    return p


def add_flags(p: argparse.ArgumentParser, *groups: str, defaults: dict[str, Any] | None = None) -> None:
    """The flags of these help groups, made from the config schema: name, metavar, help, the
    type of the value and, at the end of the help, the default (``defaults`` may replace it).
    Each flag's dest is its key path, and it is None unless given, so the file still counts."""
    if API in groups:  # a command that reads the config file: the option of its own, first
        p.add_argument("-c", "--config", metavar="FILE", help=f"config file (default: ./{DEFAULT_CONFIG} if it exists)")
    made = {title: p.add_argument_group(title) for title in groups}
    for path, (f, flag) in FLAGS.items():
        if flag.group not in made:
            continue
        default = (defaults or {}).get(path, f.default_factory() if f.default is dataclasses.MISSING else f.default)
        value = f"{default:g}" if isinstance(default, float) else default
        shown = "" if default in (None, [], "") or isinstance(default, bool) else f" (default {value})"
        kwargs: dict[str, Any] = {"dest": path, "help": (flag.help + shown).replace("%", "%%")}
        kind = f.type.split("|")[0].strip()  # "float | None" -> float
        if kind == "bool":
            made[flag.group].add_argument(flag.name, action="store_true", default=None, **kwargs)
        else:
            choices = getattr(f.metadata["check"], "choices", None)
            made[flag.group].add_argument(
                flag.name, type=TYPES.get(kind, str), metavar=flag.metavar, choices=choices, **kwargs
            )


def config_from_args(
    args: argparse.Namespace,
    fixed: dict | None = None,
    use_file: bool = True,
    defaults: dict[str, Any] | None = None,
) -> Config:
    """The config the flags, the file (-c, or ./config.yaml) and the environment make, with
    ``defaults`` for flags not given (add_flags shows them) and ``fixed`` keys over all."""
    path = getattr(args, "config", None)
    if path is None and use_file and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    given = {key: value for key, value in vars(args).items() if key in FLAGS and value is not None}
    if given.get("api.api_key"):
        register_secret(given["api.api_key"])
        log.warning("--api-key is visible to other users in ps; prefer $ROBOFLOW_API_KEY or api.api_key_file")
    config = load(path, {**(defaults or {}), **given, **(fixed or {})}, need_model=True)
    setup_logging(config.log_level)
    if path:
        log.debug("configuration from %s", path)
    return config
