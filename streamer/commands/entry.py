"""The console entry point: check that OpenCV is importable before anything imports it.

streamer declares no OpenCV wheel of its own (the ``gui`` and ``headless`` extras pick one, and a
plain install uses the OpenCV already there), so ``cv2`` may be missing or broken.  Every command,
even ``--version``, then says so in one line and exits 2, instead of a traceback.  This module
imports only the standard library until the check has passed.
"""

from __future__ import annotations

import sys
from importlib import metadata

from streamer.errors import EXIT_USAGE  # the standard library only

# The pip distributions that each install their own copy of the ``cv2`` package.
OPENCV_WHEELS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")

INSTALL_COMMANDS = (
    "pip install 'streamer[gui]' (the desktop wheel, with the preview window), "
    "pip install 'streamer[headless]' (no window), or pip install streamer to use the OpenCV already "
    "there (Debian's or Raspberry Pi OS's python3-opencv in a venv made with --system-site-packages, "
    "or JetPack's build)"
)
BOTH_FIX = "pip uninstall -y {wheels} && pip install 'streamer[headless]' (or 'streamer[gui]')"


def installed_wheels() -> list[str]:
    """Which OpenCV wheels pip has installed into this environment."""
    found = []
    for name in OPENCV_WHEELS:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def opencv_problem() -> str | None:
    """None when ``cv2`` imports and only one wheel provides it; else one line saying what is wrong."""
    wheels = installed_wheels()
    try:
        import cv2  # noqa: F401
    except Exception as exc:  # missing, or broken: a half-removed wheel, a missing libGL, a numpy mismatch
        why = f"{exc.__class__.__name__}: {exc}".splitlines()[0]
        if len(wheels) > 1:
            return (
                f"error: OpenCV (cv2) cannot be imported ({why}): {' and '.join(wheels)} are both installed and "
                f"overwrite each other's cv2; fix it with: {BOTH_FIX.format(wheels=' '.join(wheels))}"
            )
        if wheels:  # pip thinks it is there: "Requirement already satisfied" would change nothing
            return (
                f"error: OpenCV (cv2) cannot be imported ({why}) although {wheels[0]} is installed (another wheel "
                f"removed its files?); fix it with: pip uninstall -y {wheels[0]} && pip install {wheels[0]}"
            )
        return f"error: OpenCV (cv2) cannot be imported ({why}); install it with one of: {INSTALL_COMMANDS}"
    if len(wheels) > 1:
        return (
            f"warning: {' and '.join(wheels)} are both installed and overwrite each other's cv2 "
            f"(removing either breaks the other); keep one: {BOTH_FIX.format(wheels=' '.join(wheels))}"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    problem = opencv_problem()
    if problem:
        print(problem, file=sys.stderr)
        if problem.startswith("error:"):
            return EXIT_USAGE
    from streamer.commands.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
