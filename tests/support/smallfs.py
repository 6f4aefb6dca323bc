"""A small filesystem of its own (a tmpfs), to fill up for real: ENOSPC without filling this disk."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path


def _mount_command() -> list[str] | None:
    """How to mount here: directly as root, through sudo without a password, or not at all."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


@contextlib.contextmanager
def small_fs(where: Path, size_kb: int) -> Iterator[Path | None]:
    """A tmpfs of size_kb at where, unmounted on the way out; None if it cannot be mounted."""
    prefix = _mount_command()
    where.mkdir(parents=True, exist_ok=True)
    if prefix is None:
        yield None
        return
    mounted = subprocess.run(
        [*prefix, "mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=1777", "tmpfs", str(where)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        yield None
        return
    try:
        yield where
    finally:
        subprocess.run([*prefix, "umount", "-l", str(where)], capture_output=True, timeout=30)


def fill(path: Path, leave_bytes: int = 0) -> Path:
    """Write a file at path until the filesystem is full, or has only about leave_bytes free;
    returns it (delete it to free the space)."""
    chunk = b"\0" * 4096
    with open(path, "wb", buffering=0) as f:
        while shutil.disk_usage(path.parent).free > leave_bytes + len(chunk) or not leave_bytes:
            try:
                f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    if leave_bytes:
        return path
    with open(path, "ab", buffering=0) as f:  # and the last few bytes a page would still take
        for _ in range(4096):
            try:
                f.write(b"\0")
            except OSError:
                break
    return path


def read_only(where: Path) -> bool:
    """Remount the tmpfs at where (from small_fs) read-only, as a disk with errors=remount-ro ends up."""
    prefix = _mount_command()
    command = [*(prefix or []), "mount", "-o", "remount,ro", str(where)]
    return prefix is not None and subprocess.run(command, capture_output=True, timeout=30).returncode == 0
