"""CURVE for the ZeroMQ feed: write a certificate pair, read one, check a folder of clients.

A pair is what pyzmq's ``zmq.auth.create_certificates`` writes: ``NAME.key`` holds the
public key (hand it out), ``NAME.key_secret`` holds both keys (keep it, mode 600).  Every
refusal is one ``UsageError`` (or ``ConfigError``) line naming the option and the file.
A secret key is registered with ``redact`` as soon as it is read and never put in a message.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from pathlib import Path

import zmq
import zmq.auth

from streamer.errors import UsageError
from streamer.redact import register_secret

log = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
Z85_KEY = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")  # a 32-byte key in Z85


def create_pair(folder: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret (mode 600) into folder; never overwrite a file."""
    if not NAME.match(name):
        raise UsageError(f"--name: {name!r} is not usable as a file name; use letters, digits, '.', '_' or '-'")
    folder = Path(folder)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"keygen: cannot create folder {folder}: {exc.strerror or exc}") from None
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    made: list[Path] = []
    try:
        # Create both files first, exclusively and with their final modes: create_certificates
        # then rewrites them in place, so the secret is never readable by others, even briefly.
        for path, mode in ((public, 0o644), (secret, 0o600)):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
            made.append(path)
            os.chmod(path, mode)  # the umask may have taken bits from the public file's mode
        zmq.auth.create_certificates(folder, name)
    except OSError as exc:
        for path in made:
            path.unlink(missing_ok=True)
        if isinstance(exc, FileExistsError):
            raise UsageError(
                f"keygen: {exc.filename} already exists; pick another --name or folder "
                "(a key in use is never overwritten)"
            ) from None
        raise UsageError(f"keygen: cannot write to {folder}: {exc.strerror or exc}") from None
    return public, secret


def _read(path: str | os.PathLike, what: str, error: type[UsageError]) -> tuple[bytes, bytes | None]:
    """(public, secret or None) from a certificate file; the secret is registered at once."""
    p = Path(path)
    if not p.is_file():
        where = "is a folder, not a certificate file" if p.is_dir() else "not found"
        raise error(f"{what}: {p} {where}; 'streamer keygen DIR' writes a pair")
    try:
        public, secret = zmq.auth.load_certificate(p)
    except OSError as exc:
        raise error(f"{what}: cannot read {p}: {exc.strerror or exc}") from None
    except ValueError:
        public, secret = None, None
    if secret is not None:
        register_secret(secret.decode("ascii", "replace"))
    if (
        public is None
        or not Z85_KEY.match(public.decode("ascii", "replace"))
        or (secret is not None and not Z85_KEY.match(secret.decode("ascii", "replace")))
    ):
        raise error(
            f"{what}: {p} is not a CURVE certificate (expected public-key and, in a .key_secret "
            "file, secret-key lines of 40 characters); use a file written by 'streamer keygen'"
        )
    return public, secret


def read_secret(path: str | os.PathLike, what: str, error: type[UsageError] = UsageError) -> tuple[bytes, bytes]:
    """(public, secret) from a secret certificate (.key_secret)."""
    public, secret = _read(path, what, error)
    if secret is None:
        raise error(f"{what}: {path} holds only a public key; name the .key_secret file of the pair")
    if Path(path).stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s: %s can be read by other users; run chmod 600 %s", what, path, path)
    return public, secret


def read_public(path: str | os.PathLike, what: str, error: type[UsageError] = UsageError) -> bytes:
    """The public key from a certificate; a secret in the file is tolerated but warned about."""
    public, secret = _read(path, what, error)
    if secret is not None:
        log.warning("%s: %s holds a secret key too; the other side needs only the public .key file", what, path)
    return public


def check_clients(folder: str | os.PathLike, what: str, error: type[UsageError] = UsageError) -> int:
    """Check a folder of client public certificates (*.key, as zmq.auth reads it); their count."""
    p = Path(folder)
    if not p.is_dir():
        raise error(f"{what}: folder {p} not found; create it and copy each subscriber's public .key file into it")
    certs = sorted(p.glob("*.key"))
    for cert in certs:
        read_public(cert, what, error)
    if not certs:
        raise error(
            f"{what}: {p} holds no client certificates (*.key), so no subscriber could connect; "
            "copy each subscriber's public .key file into it"
        )
    return len(certs)


def client_keys(server_key: str | None, client_key: str | None) -> tuple[bytes, bytes, bytes] | None:
    """(server public, client public, client secret) for a CURVE subscriber, or None without CURVE.

    Without ``client_key`` the client uses a throwaway pair: enough for a publisher that
    admits any client holding its public key."""
    if server_key is None:
        if client_key is not None:
            raise UsageError("--client-key: needs --server-key (the publisher's public .key file)")
        return None
    server_public = read_public(server_key, "--server-key")
    if client_key is None:
        client_public, client_secret = zmq.curve_keypair()
        register_secret(client_secret.decode("ascii"))
    else:
        client_public, client_secret = read_secret(client_key, "--client-key")
    return server_public, client_public, client_secret


# A subscriber whose CURVE handshake fails just receives nothing; the socket monitor says why.
HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


_KEY_REFUSED = (
    "the publisher refused this client's key: put the client's public .key in its "
    "output.zmq_curve_clients_dir, restart it, and pass the matching .key_secret with --client-key"
)
# Per monitor event: what it most likely means for a subscriber (without CURVE, with CURVE).
HANDSHAKE_HINTS = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: (_KEY_REFUSED, _KEY_REFUSED),
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: (
        "the publisher encrypts its feed with CURVE: pass its public .key file with --server-key",
        "the publisher does not speak CURVE (or is not streamer): try without --server-key",
    ),
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: (
        "the handshake failed: is it a streamer feed?",
        "the publisher dropped the CURVE handshake: --server-key is probably not its public key "
        "(it logs 'CURVE public key of this feed' at start)",
    ),
}


def handshake_hint(event: int, with_curve: bool) -> str | None:
    """What a failed handshake (a socket monitor event) most likely means, for a subscriber."""
    hints = HANDSHAKE_HINTS.get(event)
    return hints[with_curve] if hints else None
