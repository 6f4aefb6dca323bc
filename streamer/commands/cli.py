"""The command line: ``streamer run | demo | predict | video | listen | serve | keygen``.

Exit codes: 0 clean exit, 1 runtime failure, 2 usage, configuration or authorisation
error.  Data goes to stdout; logs and the one-line ``error: ...`` go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from streamer import __version__
from streamer.commands import offline
from streamer.commands.options import add_flags, command, config_from_args, setup_logging
from streamer.commands.run import run_pipeline
from streamer.config import API, LOGGING, OUTPUT, RATE, SOURCE, zmq_endpoint
from streamer.errors import EXIT_FAILURE, EXIT_OK, StreamerError, UsageError
from streamer.outputs.curve import HANDSHAKE_FAILURES, client_keys, create_pair, handshake_hint
from streamer.redact import register_secret, scrub
from streamer.threads import dump_threads

log = logging.getLogger("streamer")


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGINT/SIGTERM set the stop event; a second SIGINT exits at once.  SIGUSR1 writes
    every thread's name and stack to stderr (a hung service can be looked into)."""

    def handle(signum, _frame):
        if signum == signal.SIGINT and stop.is_set():
            os._exit(130)
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, lambda _signum, _frame: dump_threads(sys.stderr))


# The local API costs nothing: a faster pace than the pay-per-call defaults (unless asked), and
# the page on a free port of this machine (its URL is logged).
DEMO_DEFAULTS = {"inference.max_fps": 30.0, "inference.max_in_flight": 4, "output.http": "127.0.0.1:0"}


# --- commands ---
# run, zmq and curve are imported at the top: offline imports them anyway.  The stand-in API
# (13 ms) is imported only by the commands that use it.


def cmd_run(args: argparse.Namespace, stop: threading.Event) -> int:
    return run_pipeline(config_from_args(args), stop)


def cmd_demo(args: argparse.Namespace, stop: threading.Event) -> int:
    from streamer.standin.server import ApiServer

    with ApiServer("127.0.0.1", 0, latency_ms=args.latency_ms, jitter=0.1) as server:
        demo = {
            "source.uri": "synthetic",
            "api.url": server.url,
            "api.model": "synthetic/1",
            "output.window_title": "streamer demo",
        }
        config = config_from_args(args, demo, use_file=False, defaults=DEMO_DEFAULTS)
        log.info(
            "demo: synthetic scene -> local stand-in API at %s (press q or Esc in the window, or Ctrl-C, to quit)",
            server.url,
        )
        return run_pipeline(config, stop)


def cmd_serve(args: argparse.Namespace, stop: threading.Event) -> int:
    from streamer.standin.server import ApiServer

    register_secret(args.api_key)
    try:
        server = ApiServer(
            args.host,
            args.port,
            latency_ms=args.latency_ms,
            jitter=args.jitter,
            api_key=args.api_key,
            models=set(args.model) if args.model else None,
        )
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; pick another --port"
        ) from None
    with server:  # serves until stopped
        print(
            f"serving the stand-in detection API on {server.url} (synthetic shapes only)", file=sys.stderr, flush=True
        )
        while not stop.wait(0.5):
            pass
    return EXIT_OK


def _receive(sock, monitor, endpoint: str, args: argparse.Namespace, stop: threading.Event, curve: bool) -> None:
    """listen's loop: print each message; say the first one's arrival, and why none come."""
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    told: set[str] = set()
    received = 0
    started = last = time.monotonic()
    while not stop.is_set() and (args.count is None or received < args.count):
        if args.timeout is not None and time.monotonic() - last >= args.timeout:
            why = f" ({'; '.join(sorted(told))})" if told else ""
            raise StreamerError(  # exit 1: a probe that found nothing
                f"--timeout: no message from {endpoint} in {args.timeout:g} s{why}; is streamer run "
                "publishing there (output.zmq), and is --topic right?"
            )
        ready = dict(poller.poll(200))
        if monitor in ready:
            hint = handshake_hint(recv_monitor_message(monitor)["event"], curve)
            if hint and hint not in told:  # the handshake is retried: say it once
                told.add(hint)
                log.warning("no messages from %s: %s", endpoint, hint)
        if sock not in ready:
            continue
        frames = sock.recv_multipart()
        last = time.monotonic()
        if received == 0:
            log.info("first message from %s after %.1f s", endpoint, last - started)
        print(frames[-1].decode("utf-8", "replace"), flush=True)
        received += 1


def cmd_listen(args: argparse.Namespace, stop: threading.Event) -> int:
    if args.timeout is not None and not args.timeout > 0:
        raise UsageError(f"--timeout: expected a number of seconds above 0, got {args.timeout:g}")
    keys = client_keys(args.server_key, args.client_key)
    try:
        endpoint = zmq_endpoint(args.connect)  # a bare port, as --zmq takes it
    except ValueError as exc:
        raise UsageError(f"--connect: {exc}, got {args.connect!r}") from None
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, args.topic.encode())
    if keys:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = keys
    monitor = sock.get_monitor_socket(HANDSHAKE_FAILURES)  # a failed handshake is otherwise silent
    try:
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise UsageError(
                f"--connect: cannot use {args.connect!r}: {exc}; expected an endpoint such as tcp://127.0.0.1:5555"
            ) from None
        _receive(sock, monitor, endpoint, args, stop, keys is not None)
    finally:
        sock.disable_monitor()
        monitor.close(0)  # close(0) sets linger 0: term() never waits for an unsent subscription
        sock.close(0)
        ctx.term()
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace, stop: threading.Event) -> int:
    public, secret = create_pair(args.dir, args.name)
    print(f"""wrote a CURVE certificate pair:
  {public}  public: give it to the other side
  {secret}  secret: keep it here, never copy it (mode 600)
As the publisher's pair, in its config file:
  output:
    zmq_curve_secret_key_file: {secret}
  then copy {public.name} to each subscriber, which runs
  streamer listen --connect tcp://HOST:5555 --server-key {public.name}
As a subscriber's pair, for a publisher with output.zmq_curve_clients_dir:
  copy {public.name} into that folder on the publisher, restart it, then run
  streamer listen --connect tcp://HOST:5555 --server-key SERVER.key --client-key {secret}""")
    return EXIT_OK


def _listen_parser(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "listen", "subscribe to a feed and print each message as a JSON line", cmd_listen)
    for flag, spec in {
        "--connect": {
            "default": "tcp://127.0.0.1:5555",
            "metavar": "ENDPOINT",
            "help": "the feed to read: an endpoint, or just a port (5555 means tcp://127.0.0.1:5555; default 5555)",
        },
        "--topic": {"default": "", "help": "topic prefix to subscribe to (default: every topic)"},
        "--count": {"type": int, "metavar": "N", "help": "exit after N messages"},
        "--timeout": {
            "type": float,
            "metavar": "S",
            "help": "exit 1 when no message arrives for S seconds (a probe: --count 1 --timeout 10)",
        },
        "--server-key": {
            "metavar": "FILE",
            "help": "the publisher's public certificate (.key): read a feed encrypted with CURVE",
        },
        "--client-key": {
            "metavar": "FILE",
            "help": "this subscriber's secret certificate (.key_secret), "
            "for a publisher that admits only listed clients (default: a throwaway key pair)",
        },
    }.items():
        p.add_argument(flag, **spec)
    add_flags(p, LOGGING)


def _tool_parsers(sub: argparse._SubParsersAction) -> None:
    """keygen and serve: the small helpers beside the pipeline."""
    p = command(sub, "keygen", "write a CURVE certificate pair for an encrypted feed", cmd_keygen)
    p.add_argument("dir", metavar="DIR", help="folder to write NAME.key and NAME.key_secret into")
    p.add_argument("--name", default="server", help="file name of the pair (default: server)")

    p = command(sub, "serve", "a local stand-in for the detection API (synthetic shapes only)", cmd_serve)
    for flag, spec in {
        "--host": {"default": "127.0.0.1", "help": "address to listen on (default 127.0.0.1: this machine only)"},
        "--port": {"type": int, "default": 9001, "help": "port to listen on (default 9001, as Roboflow Inference)"},
        "--latency-ms": {"type": float, "default": 0.0, "help": "add this delay to every answer (default 0)"},
        "--jitter": {"type": float, "default": 0.0, "help": "spread of the delay, e.g. 0.1 for +-10%% (default 0)"},
        "--api-key": {"help": "require this key (401 for any other)"},
        "--model": {"action": "append", "help": "serve only this model id (repeatable; default: any)"},
    }.items():
        p.add_argument(flag, **spec)
    add_flags(p, LOGGING)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamer", description="Live object detection from a camera through a Roboflow-compatible inference API."
    )
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = command(sub, "run", "the live pipeline: source -> API -> window and feed", cmd_run)
    add_flags(p, SOURCE, API, RATE, OUTPUT, LOGGING)

    p = command(sub, "demo", "the synthetic scene through an in-process local API (no camera, no key)", cmd_demo)
    add_flags(p, RATE, OUTPUT, LOGGING, defaults=DEMO_DEFAULTS)
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay the local API's answers (default 0)")

    offline.add_commands(sub)

    _listen_parser(sub)
    _tool_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "log_level", None) or "info")  # a config file may change it (config_from_args)
    stop = threading.Event()
    install_signal_handlers(stop)
    try:
        return args.func(args, stop)
    except StreamerError as exc:
        print(f"error: {scrub(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:
        log.debug("unexpected error", exc_info=True)
        print(
            f"error: unexpected {exc.__class__.__name__}: {scrub(str(exc))} (run with --log-level debug for details)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
