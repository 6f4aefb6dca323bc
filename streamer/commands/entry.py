"""The console entry point: check that OpenCV is importable before anything imports it.

streamer declares no OpenCV wheel of its own (the ``gui`` and ``headless`` extras pick one, and a
plain install uses the OpenCV already there), so ``cv2`` may be missing or broken.  Every command,
even ``--version``, then says so in one line and exits 2, instead of a traceback.  This module
imports only the standard library until the check has passed.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

from streamer.errors import EXIT_USAGE  # the standard library only

# The pip distributions that each install their own copy of the ``cv2`` package.
OPENCV_WHEELS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")

# What a user can paste into the venv streamer runs in, however streamer itself was installed:
# the OpenCV wheels are what the install extras name.
INSTALL_COMMANDS = (
    "pip install opencv-python (the desktop wheel, with the preview window), "
    "pip install opencv-python-headless (no window), or use the OpenCV already there (Debian's or "
    "Raspberry Pi OS's python3-opencv, in a venv made with --system-site-packages, or JetPack's build)"
)
# Shared libraries the OpenCV wheels link to that a minimal system may lack, and their Debian packages.
SYSTEM_LIBRARIES = {
    "libGL.so.1": "libgl1",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libxcb.so.1": "libxcb1",
    "libX11.so.6": "libx11-6",
    "libXext.so.6": "libxext6",
    "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6",
}
BOTH_FIX = "pip uninstall -y {wheels} && pip install opencv-python-headless (or opencv-python)"


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


def _import_failure() -> tuple[str, bool] | None:
    """None when ``cv2`` imports as a real OpenCV; else why not ("Kind: message") and whether
    cv2's own files are missing (rather than something it needs)."""
    try:
        import cv2
    except Exception as exc:  # missing, or broken: a half-removed wheel, a missing libGL, a numpy mismatch
        missing = isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "cv2"
        return f"{exc.__class__.__name__}: {exc}".splitlines()[0], missing
    if getattr(cv2, "__file__", None) is None or not hasattr(cv2, "VideoCapture"):
        # What an uninstall can leave: an empty cv2/ directory, imported as a namespace package.
        return "ModuleNotFoundError: cv2 is an empty directory left by an uninstall", True
    return None


def opencv_problem() -> str | None:
    """None when ``cv2`` imports and only one wheel provides it; else one line saying what is wrong."""
    wheels = installed_wheels()
    failure = _import_failure()
    if failure is None:
        if len(wheels) > 1:
            return (
                f"warning: {' and '.join(wheels)} are both installed and overwrite each other's cv2 "
                f"(removing either breaks the other); keep one: {BOTH_FIX.format(wheels=' '.join(wheels))}"
            )
        return None
    why, missing = failure
    head = f"error: OpenCV (cv2) cannot be imported ({why})"
    if len(wheels) > 1:
        return (
            f"{head}: {' and '.join(wheels)} are both installed and overwrite each other's cv2; "
            f"fix it with: {BOTH_FIX.format(wheels=' '.join(wheels))}"
        )
    library = re.search(r"(lib[\w.+-]+?\.so[\d.]*): cannot open shared object file", why)
    if library:  # a system library OpenCV links to: reinstalling the wheel cannot bring it
        name = library[1]
        package = SYSTEM_LIBRARIES.get(name)
        fix = f"apt install {package}" if package else f"apt-file search {name} names the package"
        if name.startswith("libGL.") and "opencv-python" in wheels:
            fix += (
                ", or the wheel without a window: pip uninstall -y opencv-python && pip install opencv-python-headless"
            )
        return f"{head}: the system library {name} that OpenCV needs is missing; on Debian: {fix}"
    if not missing:  # installed, but it fails inside: a numpy mismatch, a broken build
        fix = (
            f"pip install --force-reinstall {wheels[0]}" if wheels else f"reinstall it with one of: {INSTALL_COMMANDS}"
        )
        return f"{head}: this OpenCV is installed but fails to load; fix that, or {fix}"
    if wheels:  # pip thinks it is there: "Requirement already satisfied" would change nothing
        return (
            f"{head} although {wheels[0]} is installed (another wheel removed its files?); "
            f"fix it with: pip uninstall -y {wheels[0]} && pip install {wheels[0]}"
        )
    return f"{head}; install it with one of: {INSTALL_COMMANDS}"


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
