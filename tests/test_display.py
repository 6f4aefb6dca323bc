"""The preview window on a real X server (Xvfb): overlay on screen, q/Esc quit, headless fallback.

Nothing is mocked: `streamer demo` runs as a subprocess against Xvfb, the window is found and
driven with xdotool, and the overlay is judged from a screenshot taken with ImageMagick's
`import`.  The pixel checks are tolerant (OpenCV 4 and 5 draw text differently, the window may
scale the image) but each one fails on the raw scene, which the tests show as a control.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import clean_env, need_tool

from streamer.outputs.overlay import class_colour
from streamer.outputs.window import gui_available
from streamer.sources.synthetic import SHAPES, SyntheticScene

SCENE_W, SCENE_H = 1280, 720  # what `streamer demo` renders
GRID_STEP_PX = SCENE_W // 16  # SyntheticScene draws a grid line every 80 px
LEAD_COPY = Path("/tmp/streamer-window.png")  # a copy of the last screenshot for a human to look at
COLOUR_TOL = 16  # per channel; the window scales the image, which blends edges only
WINDOW_TIMEOUT_S = 20.0
QUIT_TIMEOUT_S = 5.0


# --- the X server ---


def _display_in_use(n: int) -> bool:
    return Path(f"/tmp/.X11-unix/X{n}").exists() or Path(f"/tmp/.X{n}-lock").exists()


def _x_answers(display: str) -> bool:
    try:
        return (
            subprocess.run(
                ["xdpyinfo", "-display", display], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=5
            ).returncode
            == 0
        )
    except subprocess.TimeoutExpired:
        return False


def _start_xvfb(log_path: Path) -> tuple[subprocess.Popen, str]:
    """Xvfb on the first free display number that it manages to claim (others may race us)."""
    for n in range(90, 190):
        if _display_in_use(n):
            continue
        display = f":{n}"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                ["Xvfb", display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if _x_answers(display):
                return proc, display
            time.sleep(0.1)
        _stop(proc)  # it died (lost the race for the lock) or never answered: try the next number
    pytest.fail(f"could not start Xvfb on any display :90-:189 (see {log_path})")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def xvfb(tmp_path):
    """A private X server; yields its DISPLAY string and always stops it."""
    for tool in ("Xvfb", "xdpyinfo", "xdotool", "import"):
        need_tool(tool)
    proc, display = _start_xvfb(tmp_path / "xvfb.log")
    try:
        yield display
    finally:
        _stop(proc)


def _x(display: str, *args: str, timeout: float = 5.0) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), env=clean_env(DISPLAY=display), capture_output=True, text=True, timeout=timeout)


def _find_window(display: str, title: str, proc, timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.popen.poll() is None:
        found = _x(display, "xdotool", "search", "--name", title).stdout.split()
        if found:
            return found[0]
        time.sleep(0.2)
    return None


# --- reading a screenshot ---


@dataclass(frozen=True)
class Region:
    """Where the scene image sits inside the screenshot (the window adds a toolbar and margins)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def scale(self) -> float:
        return (self.x1 - self.x0) / SCENE_W

    def crop(self, shot: np.ndarray) -> np.ndarray:
        return shot[self.y0 : self.y1, self.x0 : self.x1]


def _scene_region(shot: np.ndarray) -> Region:
    """The scene is the dark part of the window; Qt's toolbar and the margins are light grey."""
    dark = cv2.cvtColor(shot, cv2.COLOR_BGR2GRAY) < 120
    rows = np.flatnonzero(dark.mean(axis=1) > 0.5)
    assert rows.size, "no dark scene anywhere in the window"
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(dark[y0:y1].mean(axis=0) > 0.5)
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    region = Region(x0, y0, x1, y1)
    aspect = (x1 - x0) / (y1 - y0)
    assert abs(aspect - SCENE_W / SCENE_H) < 0.03, f"scene area {region} is not 16:9 (aspect {aspect:.3f})"
    return region


def _near(image: np.ndarray, bgr: tuple[int, int, int], tol: int = COLOUR_TOL) -> np.ndarray:
    diff = np.abs(image.astype(np.int16) - np.array(bgr, dtype=np.int16))
    return (diff <= tol).all(axis=2)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def overlay_problems(scene: np.ndarray) -> list[str]:
    """What is wrong with the overlay in this (possibly scaled) scene image; empty when it is right.

    Each class's colour must be there (box outline and label band) and lie around the shape
    of that class; the raw scene contains none of these colours.
    """
    problems = []
    scale = scene.shape[1] / SCENE_W
    margin = int(90 * scale)  # the result lags the frame (~100-200 ms of motion) and the label sits above
    for shape in SHAPES:
        overlay = _near(scene, class_colour(shape.name))
        count = int(overlay.sum())
        if count < 150 * scale * scale:
            problems.append(f"{shape.name}: only {count} pixels in its class colour {class_colour(shape.name)}")
            continue
        body = _bbox(_near(scene, shape.bgr, 30))
        if body is None:
            problems.append(f"{shape.name}: the shape itself ({shape.bgr}) is not in the image")
            continue
        x0, y0, x1, y1 = body
        around = overlay[max(0, y0 - margin) : y1 + margin, max(0, x0 - margin) : x1 + margin]
        share = around.sum() / count
        if share < 0.9:
            problems.append(f"{shape.name}: only {share:.0%} of its overlay pixels are near the shape at {body}")
    return problems


def status_band_problems(scene: np.ndarray) -> list[str]:
    """The dark band with white text across the top, over the (brighter) grey ground."""
    scale = scene.shape[1] / SCENE_W
    grey = cv2.cvtColor(scene, cv2.COLOR_BGR2GRAY)
    band = grey[: max(1, int(20 * scale))]  # the band is >= 24 px at 1280 wide with any font
    below = grey[int(110 * scale) : int(230 * scale)]  # ground between the status band and the shapes' labels
    band_level, ground_level = float(np.median(band)), float(np.median(below))
    problems = []
    if not band_level < 0.6 * ground_level:
        problems.append(f"top band (median grey {band_level:.0f}) is not darker than the ground ({ground_level:.0f})")
    text = int((band > 190).sum())
    if text < 100 * scale:
        problems.append(f"only {text} bright (text) pixels in the top band")
    return problems


def grid_problems(scene: np.ndarray) -> list[str]:
    """The picture is the synthetic scene: a neutral dark grey ground with a lighter grid."""
    scale = scene.shape[1] / SCENE_W
    ground = scene[int(60 * scale) :]  # below the status band
    b, g, r = (float(np.median(ground[..., c])) for c in range(3))
    problems = []
    if not (max(b, g, r) - min(b, g, r) <= 6 and 15 <= g <= 80):
        problems.append(f"the ground is not dark neutral grey (median BGR {b:.0f},{g:.0f},{r:.0f})")
    grey = cv2.cvtColor(ground, cv2.COLOR_BGR2GRAY).astype(np.int16)
    lines = 0
    for k in range(1, SCENE_W // GRID_STEP_PX):
        # A 1-px line becomes 1-2 px after scaling: take the brightest of three columns, per row.
        x = round(k * GRID_STEP_PX * scale)
        line = grey[:, x - 1 : x + 2].max(axis=1)
        side = np.maximum(grey[:, x - 6], grey[:, x + 6])
        # The three shapes can line up over one column and hide ~2/3 of it: ask for 10%.
        if ((line - side) >= 8).mean() > 0.1:
            lines += 1
    if lines < 12:
        problems.append(f"only {lines} of 15 vertical grid lines where the scene has them")
    return problems


def test_pixel_checks_fail_on_the_raw_scene():
    """Control: the checks the window test relies on reject a frame without the overlay."""
    raw = SyntheticScene(SCENE_W, SCENE_H).render(40)
    scaled = cv2.resize(raw, (1173, 660), interpolation=cv2.INTER_AREA)  # as Qt shows it in 1280x720
    for image in (raw, scaled):
        assert len(overlay_problems(image)) == len(SHAPES)
        assert status_band_problems(image)
        assert grid_problems(image) == []
    assert grid_problems(np.full((SCENE_H, SCENE_W, 3), 40, np.uint8))  # a dark picture without the grid


# --- the window ---


@pytest.mark.system
@pytest.mark.gui
@pytest.mark.parametrize("key", ["q", "Escape"])
def test_window_shows_overlay_and_quits_on_key(xvfb, spawn, tmp_path, key):
    # Under Xvfb a Qt window sometimes stays black for good (4 of 43 demo runs on a loaded
    # machine, and once in this test under CI); with Qt's X11 shared-memory images off it did
    # not happen in 19 runs.  A screen of a real machine is not Xvfb: the product keeps them on.
    proc = spawn(["demo", "--duration", "60"], env=clean_env(DISPLAY=xvfb, QT_X11_NO_MITSHM="1"))
    window = _find_window(xvfb, "streamer demo", proc, WINDOW_TIMEOUT_S)
    assert window, (
        f"no window titled 'streamer demo' within {WINDOW_TIMEOUT_S:.0f} s "
        f"(exit code {proc.popen.poll()}):\n{proc.stderr}"
    )
    assert "running headless" not in proc.stderr

    shot_path = tmp_path / "shot.png"
    # A window can be mapped before Qt has painted it, and results and the status line take a
    # moment to arrive: look again, for a bounded time, before judging.
    deadline = time.monotonic() + 12.5
    while True:
        assert proc.popen.poll() is None, f"demo exited early with {proc.popen.poll()}:\n{proc.stderr}"
        taken = _x(xvfb, "import", "-window", window, str(shot_path), timeout=15)
        assert taken.returncode == 0, taken.stderr
        shutil.copyfile(shot_path, LEAD_COPY)
        shot = cv2.imread(str(shot_path))
        assert shot is not None, f"cannot read the screenshot {shot_path}"
        region = _scene_region(shot)
        scene = region.crop(shot)
        problems = grid_problems(scene) + status_band_problems(scene) + overlay_problems(scene)
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert region.scale > 0.5, f"the scene is shown at {region.scale:.2f}x only ({region})"
    assert problems == [], f"screenshot {shot_path} (copy in {LEAD_COPY}): " + "; ".join(problems)

    sent = _x(xvfb, "xdotool", "key", "--window", window, key)
    assert sent.returncode == 0, sent.stderr
    started = time.monotonic()
    try:
        code = proc.wait(QUIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{key} did not close the demo within {QUIT_TIMEOUT_S:.0f} s:\n{proc.stderr}")
    assert code == 0, proc.stderr
    assert time.monotonic() - started < QUIT_TIMEOUT_S
    assert "stopped:" in proc.stderr
    assert "QFontDatabase" not in proc.stderr  # Qt was pointed at fonts that exist


# --- no usable display: headless, never SIGABRT ---


def _dead_display() -> str:
    """A display name with no X server behind it (":87" unless something happens to be there)."""
    for n in (87, *range(190, 290)):
        if _display_in_use(n):
            continue
        if shutil.which("xdpyinfo") and _x_answers(f":{n}"):
            continue  # an abstract-namespace server with no socket file
        return f":{n}"
    pytest.fail("no unused display number for the dead-display test")


@pytest.mark.parametrize("display", [None, "dead"], ids=["DISPLAY-unset", "DISPLAY-no-server"])
def test_demo_without_usable_display_runs_headless(spawn, display):
    env = clean_env() if display is None else clean_env(DISPLAY=_dead_display())
    proc = spawn(["demo", "--duration", "3"], env=env)
    try:
        code = proc.wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"demo --duration 3 still running after 30 s:\n{proc.stderr}")
    assert code == 0, f"exit code {code} (134 = SIGABRT from Qt):\n{proc.stderr}"
    assert "no preview window:" in proc.stderr and "running headless" in proc.stderr, proc.stderr
    if not gui_available():  # opencv-python-headless (make test-opencv): the build itself is the reason
        assert "this OpenCV build has no GUI" in proc.stderr
    elif display is None:
        assert "DISPLAY is not set" in proc.stderr
    else:
        assert f"cannot connect to the X display {env['DISPLAY']!r}" in proc.stderr
    assert "stopped:" in proc.stderr
