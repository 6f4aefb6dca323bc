"""Installing without an OpenCV wheel: a real venv with no cv2, and every command says so in one line.

``pip install .`` declares no OpenCV (the gui and headless extras pick a wheel, and a plain
install uses the OpenCV already importable), so here a fresh venv without system site packages gets
streamer and its dependencies and nothing provides ``cv2``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, clean_env

from streamer.commands import entry

COMMANDS = [["--version"], ["--help"], ["run", "--source", "synthetic"], ["demo", "--help"], ["listen"]]
# The first test here builds a venv with pip: 12 s with a warm cache, minutes on a cold one.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory) -> Path:
    """A venv with streamer (editable) and its declared dependencies, and no cv2."""
    venv = tmp_path_factory.mktemp("nocv2") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    res = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "-e", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return venv


def _site_packages(venv: Path) -> Path:
    (found,) = (venv / "lib").glob("python3*/site-packages")
    return found


def _streamer(venv: Path, args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / "streamer"), *args], capture_output=True, text=True, timeout=60, env=clean_env()
    )


def test_a_plain_install_brings_no_opencv_wheel(bare_venv):
    installed = [p.name.lower() for p in _site_packages(bare_venv).glob("*.dist-info")]
    assert not [name for name in installed if name.startswith("opencv")], installed
    assert any(name.startswith("numpy") for name in installed)  # the other dependencies did come
    res = subprocess.run([str(bare_venv / "bin" / "python"), "-c", "import cv2"], capture_output=True, timeout=60)
    assert res.returncode != 0


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_every_command_without_cv2_is_one_line_naming_the_three_installs_and_exit_2(bare_venv, args):
    res = _streamer(bare_venv, args)
    assert res.returncode == 2, res.stderr
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    line = lines[0]
    assert line.startswith("error: OpenCV (cv2) cannot be imported (ModuleNotFoundError: No module named 'cv2')")
    for command in ("pip install opencv-python ", "pip install opencv-python-headless "):
        assert command in line
    assert "python3-opencv" in line and "--system-site-packages" in line


def test_python_dash_m_streamer_says_the_same(bare_venv):
    res = subprocess.run(
        [str(bare_venv / "bin" / "python"), "-m", "streamer", "--version"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2 and res.stderr.startswith("error: OpenCV (cv2) cannot be imported"), res.stderr


def _fake_wheel_record(site: Path, name: str) -> Path:
    """What pip leaves of a wheel whose cv2 another wheel's uninstall removed: its metadata only."""
    dist = site / f"{name.replace('-', '_')}-5.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 5.1.0\n")
    return dist


def test_both_wheels_recorded_and_cv2_gone_names_both_and_the_fix(bare_venv):
    site = _site_packages(bare_venv)
    made = [_fake_wheel_record(site, name) for name in ("opencv-python", "opencv-python-headless")]
    try:
        res = _streamer(bare_venv, ["--version"])
    finally:
        for dist in made:
            (dist / "METADATA").unlink()
            dist.rmdir()
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert "opencv-python and opencv-python-headless are both installed" in line
    assert "pip uninstall -y opencv-python opencv-python-headless && pip install opencv-python-headless" in line


def test_one_wheel_recorded_and_cv2_gone_says_to_reinstall_it(bare_venv):
    site = _site_packages(bare_venv)
    dist = _fake_wheel_record(site, "opencv-python-headless")
    try:
        res = _streamer(bare_venv, ["--help"])
    finally:
        (dist / "METADATA").unlink()
        dist.rmdir()
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    assert "although opencv-python-headless is installed" in line
    assert line.endswith("pip uninstall -y opencv-python-headless && pip install opencv-python-headless")


@contextlib.contextmanager
def _fake_cv2(site: Path, init: str | None, wheel: str | None = "opencv-python"):
    """A cv2 package in the venv that fails as a real one can (``init`` None: an empty cv2/
    directory, as an uninstall leaves when a stray file stays), recorded as ``wheel``."""
    package = site / "cv2"
    (package / "qt").mkdir(parents=True)
    if init is not None:
        (package / "__init__.py").write_text(init)
    dist = _fake_wheel_record(site, wheel) if wheel else None
    try:
        yield
    finally:
        shutil.rmtree(package)
        if dist:
            shutil.rmtree(dist)


LIBGL = "raise ImportError('libGL.so.1: cannot open shared object file: No such file or directory')\n"
LIBXCB = "raise ImportError('libxcb.so.1: cannot open shared object file: No such file or directory')\n"
NUMPY = "raise ImportError('numpy.core.multiarray failed to import')\n"


@pytest.mark.parametrize(
    ("init", "wheel", "says", "never"),
    [
        (None, "opencv-python", "pip uninstall -y opencv-python && pip install opencv-python", None),
        (None, None, "pip install opencv-python-headless", "although"),
        (LIBGL, "opencv-python", "apt install libgl1, or the wheel without a window", "removed its files"),
        (LIBGL, None, "apt install libgl1", "pip uninstall"),
        (LIBXCB, "opencv-python-headless", "the system library libxcb.so.1 that OpenCV needs", "reinstall"),
        (LIBXCB.replace("libxcb.so.1", "libfoo.so.3"), None, "apt-file search libfoo.so.3", "pip install"),
        (NUMPY, "opencv-python-headless", "pip install --force-reinstall opencv-python-headless", "removed its files"),
        ("import numpy.no_such_part\n", None, "fails to load", "although"),
    ],
    ids=["empty-dir-wheel", "empty-dir", "libgl-wheel", "libgl-system", "xcb", "unknown-lib", "numpy", "inner-module"],
)
def test_a_broken_cv2_gets_the_advice_for_its_cause(bare_venv, init, wheel, says, never):
    with _fake_cv2(_site_packages(bare_venv), init, wheel):
        res = _streamer(bare_venv, ["--version"])
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: OpenCV (cv2) cannot be imported (") and says in line, line
    assert never is None or never not in line, line


def test_both_wheels_with_a_working_cv2_is_a_warning_only(monkeypatch):
    monkeypatch.setattr(entry, "installed_wheels", lambda: ["opencv-python", "opencv-python-headless"])
    problem = entry.opencv_problem()
    assert problem.startswith("warning: opencv-python and opencv-python-headless are both installed")
    assert "pip uninstall -y opencv-python opencv-python-headless && pip install" in problem


def test_this_venv_has_one_working_opencv():
    assert entry.opencv_problem() is None
