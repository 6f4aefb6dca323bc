"""Certificates made by the ``openssl`` tool at test time, for TLS servers on 127.0.0.1.

    cert, key = self_signed(folder)          # PEM files; raises if openssl fails
    server = server_context(cert, key)       # for a server socket's wrap_socket(server_side=True)

    ca = authority(folder)                   # a CA: point SSL_CERT_FILE at ca[0] to trust what it signs
    cert, key = issued(folder, ca, "expired", not_before="20000101000000Z", not_after="20010101000000Z")
    cert, key = issued(folder, ca, "other", san="DNS:example.invalid")

A self-signed certificate is its own CA: point SSL_CERT_FILE at it and a verifying client trusts
it.  ``issued`` signs with ``openssl ca``, the one openssl 3.0 command that sets any validity
dates (``req -x509`` and ``x509 -req`` gained ``-not_before`` only in 3.4), so a certificate can
be expired or not valid yet.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

LOCAL_NAMES = "IP:127.0.0.1,DNS:localhost"
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

_CA_CONFIG = """\
[ ca ]
default_ca = test_ca

[ test_ca ]
database = {folder}/index.txt
new_certs_dir = {folder}
serial = {folder}/serial
default_md = sha256
policy = any_name
copy_extensions = copy
unique_subject = no

[ any_name ]
commonName = supplied
"""


def openssl() -> str | None:
    return shutil.which("openssl")


def _run(args: list[str], timeout_s: float) -> None:
    tool = openssl()
    if tool is None:
        raise FileNotFoundError("openssl is not installed")
    done = subprocess.run([tool, *args], check=False, capture_output=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.decode(errors='replace').strip()}")


def self_signed(
    folder: Path, stem: str = "self", *, san: str = LOCAL_NAMES, timeout_s: float = 30.0
) -> tuple[Path, Path]:
    """(certificate, key) in folder: EC P-256, one day, subjectAltName san."""
    cert, key = folder / f"{stem}.pem", folder / f"{stem}.key"
    _run(
        [
            "req",
            "-x509",
            *_EC,
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=streamer test",
            "-addext",
            f"subjectAltName={san}",
        ],
        timeout_s,
    )
    return cert, key


def authority(folder: Path, timeout_s: float = 30.0) -> tuple[Path, Path]:
    """(certificate, key) of a test CA in folder, valid for a day."""
    cert, key = folder / "ca.pem", folder / "ca.key"
    _run(
        [
            "req",
            "-x509",
            *_EC,
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=streamer test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        timeout_s,
    )
    (folder / "index.txt").write_text("")
    (folder / "serial").write_text("1000\n")
    (folder / "ca.cnf").write_text(_CA_CONFIG.format(folder=folder))
    return cert, key


def issued(
    folder: Path,
    ca: tuple[Path, Path],
    stem: str,
    *,
    san: str = LOCAL_NAMES,
    not_before: str | None = None,
    not_after: str | None = None,
    timeout_s: float = 30.0,
) -> tuple[Path, Path]:
    """(certificate, key) in folder, signed by ca (made by ``authority`` in the same folder).

    not_before / not_after: ASN.1 times such as "20000101000000Z"; by default, now and a day on."""
    cert, key, request = folder / f"{stem}.pem", folder / f"{stem}.key", folder / f"{stem}.csr"
    _run(
        [
            "req",
            "-new",
            *_EC,
            "-keyout",
            str(key),
            "-out",
            str(request),
            "-subj",
            f"/CN=streamer test {stem}",
            "-addext",
            f"subjectAltName={san}",
        ],
        timeout_s,
    )
    dates = ["-startdate", not_before] if not_before else []
    dates += ["-enddate", not_after] if not_after else ["-days", "1"]
    _run(
        [
            "ca",
            "-batch",
            "-notext",
            "-config",
            str(folder / "ca.cnf"),
            "-cert",
            str(ca[0]),
            "-keyfile",
            str(ca[1]),
            "-in",
            str(request),
            "-out",
            str(cert),
            *dates,
        ],
        timeout_s,
    )
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
