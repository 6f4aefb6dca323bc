"""The preview window, and the decision whether one can be opened at all.

opencv-python's Qt GUI aborts the whole process (SIGABRT, uncatchable) on the first
imshow when DISPLAY is unset or wrong, so we decide before ever calling it.
All HighGUI calls are made from the main thread.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import cv2
import numpy as np

log = logging.getLogger(__name__)

QUIT_KEYS = {ord("q"), ord("Q"), 27}  # q or Esc

# Opens and closes the X display named by DISPLAY in a child process, so that a
# display that hangs or refuses us cannot take this process down with it.
_PROBE = (
    "import ctypes, ctypes.util, sys\n"
    "name = ctypes.util.find_library('X11')\n"
    "if not name: sys.exit(3)\n"
    "x = ctypes.CDLL(name); x.XOpenDisplay.restype = ctypes.c_void_p\n"
    "x.XCloseDisplay.argtypes = [ctypes.c_void_p]\n"
    "d = x.XOpenDisplay(None)\n"
    "sys.exit(4 if not d else x.XCloseDisplay(d) * 0)\n"
)


def gui_available() -> bool:
    """Whether this OpenCV build has a GUI at all (opencv-python-headless has none)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip().upper() not in ("NONE", "")
    return True


def display_available(env: dict[str, str] | None = None) -> tuple[bool, str]:
    """Whether a window can be shown; if not, a short reason."""
    env = dict(os.environ if env is None else env)
    if not gui_available():
        return False, "this OpenCV build has no GUI (opencv-python-headless)"
    if sys.platform in ("win32", "darwin"):
        return True, ""
    display = env.get("DISPLAY")
    if not display:
        return False, "DISPLAY is not set"
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, timeout=5, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return False, f"the X display {display!r} did not answer within 5 s"
    if probe.returncode == 3:
        return False, "libX11 is not installed, so no window can be opened"
    if probe.returncode != 0:
        return False, f"cannot connect to the X display {display!r}"
    return True, ""


class Window:
    """One preview window.  ``show`` returns False once the user pressed q/Esc or closed it."""

    def __init__(self, title: str):
        self.title = title
        self._opened = False

    def show(self, image: np.ndarray) -> bool:
        if not self._opened:
            _point_qt_at_system_fonts()
            # GUI_NORMAL: no Qt toolbar, so the picture fills the window at the size asked.
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
            cv2.resizeWindow(self.title, *_fit(image.shape[1], image.shape[0]))
            self._opened = True
        cv2.imshow(self.title, image)
        return self.poll()

    def poll(self) -> bool:
        """Service GUI events; False when the user asked to quit."""
        if not self._opened:
            return True
        key = cv2.waitKey(1)
        if key != -1 and (key & 0xFF) in QUIT_KEYS:
            return False
        try:
            # Below 1: closed with the window manager's button.
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        except cv2.error:
            return False

    def close(self, timeout_s: float = 0.0) -> None:
        """Close the window (the main thread's own call, at once)."""
        if self._opened:
            self._opened = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass


def _point_qt_at_system_fonts() -> None:
    """opencv-python points Qt at a font folder its wheel does not ship (cv2/qt/fonts), and Qt
    then warns on every window; point it at the system's fonts instead (docs/facts.md)."""
    current = os.environ.get("QT_QPA_FONTDIR")
    if sys.platform.startswith("linux") and current and not os.path.isdir(current):
        for folder in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/TTF", "/usr/share/fonts"):
            if os.path.isdir(folder):
                os.environ["QT_QPA_FONTDIR"] = folder
                return


def _fit(width: int, height: int, max_w: int = 1280, max_h: int = 760) -> tuple[int, int]:
    scale = min(1.0, max_w / width, max_h / height)
    return int(width * scale), int(height * scale)
