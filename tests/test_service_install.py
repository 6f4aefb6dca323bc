"""The service install of docs/service.md (and the unit file's header), run as written on this
machine: a venv that sees Debian's python3-opencv, or one with the headless wheel, then the unit's
own command.  A user following the docs must end with a service that starts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, clean_env, free_port, need

from support.checkout import checkout

# pip builds and downloads here: minutes on a cold cache.
pytestmark = [pytest.mark.timeout(600), pytest.mark.system]
SYSTEM_PYTHON = "/usr/bin/python3"


def docs_blocks() -> list[str]:
    """The shell blocks of docs/service.md's section on the one-camera unit."""
    text = (ROOT / "docs" / "service.md").read_text()
    section = text[text.index("## One camera") : text.index("### The env file")]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def venv_line(block: str) -> str:
    (line,) = [line for line in block.splitlines() if "-m venv" in line]
    return line


def install(tmp_path: Path, line: str) -> Path:
    """Run the documented venv line, /opt/streamer/.venv moved under tmp_path, in a checkout."""
    venv = tmp_path / "opt" / ".venv"
    command = line.replace("/opt/streamer/.venv", str(venv))
    assert command.startswith("python3 -m venv ")
    command = SYSTEM_PYTHON + command[len("python3") :]
    done = subprocess.run(
        ["bash", "-c", command], cwd=checkout(tmp_path), capture_output=True, text=True, timeout=540, env=clean_env()
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def service_runs(tmp_path: Path, venv: Path, api_server) -> str:
    """The unit's ExecStart, with the config a user writes (a synthetic source, a local API)."""
    unit = (ROOT / "systemd" / "streamer.service").read_text()
    exec_start = re.search(r"^ExecStart=(\S+) (.*)$", unit, re.M)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"source:\n  uri: synthetic\napi:\n  url: {api_server.url}\n  model: synthetic/1\n"
        f"output:\n  http: 127.0.0.1:{free_port()}\n"
    )
    args = exec_start[2].replace("/etc/streamer/config.yaml", str(config)).replace("--http 8080 ", "").split()
    done = subprocess.run(
        [str(venv / "bin" / "streamer"), *args, "--duration", "4"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stopped:" in done.stderr and " 0 results" not in done.stderr, done.stderr[-3000:]
    return done.stderr


def test_the_unit_header_and_the_docs_give_the_same_install():
    system_opencv, headless = docs_blocks()
    assert "apt install python3-opencv python3-venv" in system_opencv
    assert "--system-site-packages" in venv_line(system_opencv)
    assert "'.[headless]'" in venv_line(headless) and "--system-site-packages" not in venv_line(headless)
    header = (ROOT / "systemd" / "streamer.service").read_text().split("\n[Unit]")[0]
    assert venv_line(system_opencv) in header


def test_the_service_installed_for_the_systems_opencv_starts(tmp_path, api_server):
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import cv2, venv"], capture_output=True, timeout=60)
    need(probe.returncode == 0, "Debian's python3-opencv and python3-venv are not installed")
    venv = install(tmp_path, venv_line(docs_blocks()[0]))
    wheels = list((venv / "lib").glob("python3*/site-packages/opencv*"))
    assert wheels == [], wheels  # Debian's cv2, no wheel
    service_runs(tmp_path, venv, api_server)


def test_the_service_installed_with_the_headless_wheel_starts(tmp_path, api_server):
    venv = install(tmp_path, venv_line(docs_blocks()[1]))
    assert list((venv / "lib").glob("python3*/site-packages/opencv_python_headless*"))
    service_runs(tmp_path, venv, api_server)


def test_every_install_command_streamer_prints_installs_an_opencv(tmp_path):
    """The no-cv2 error's commands, pasted into a venv as printed, resolve to OpenCV's own wheels
    (never to a project that happens to share streamer's name)."""
    from streamer.commands.entry import BOTH_FIX, INSTALL_COMMANDS

    printed = re.findall(r"pip install ([\w.-]+)", INSTALL_COMMANDS + " " + BOTH_FIX)
    assert set(printed) == {"opencv-python", "opencv-python-headless"}, printed
    venv = tmp_path / "venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True, timeout=120)
    for name in sorted(set(printed)):
        done = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--dry-run", "--no-deps", "--disable-pip-version-check", name],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0 and f"Would install {name}-" in done.stdout, done.stdout + done.stderr
