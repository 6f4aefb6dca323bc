"""`make demo` on a box without a display, in a fresh copy of the checkout, as the README says:
it installs what the demo needs (the headless OpenCV wheel, no test tools) and runs headless."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

import pytest
from conftest import clean_env

from support.checkout import checkout
from support.waiting import wait_until

pytestmark = [pytest.mark.timeout(600), pytest.mark.system]


def test_make_demo_installs_only_what_the_demo_needs_and_runs_headless(tmp_path):
    copy = checkout(tmp_path)
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        make = subprocess.Popen(
            ["make", "demo"], cwd=copy, stdout=out, stderr=subprocess.STDOUT, env=clean_env(), start_new_session=True
        )
        wait_until(lambda: make.poll() is not None or b"running headless" in log.read_bytes(), 540)
        try:
            assert b"running headless" in log.read_bytes(), log.read_text()[-3000:]
        finally:
            os.killpg(make.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group, make and the demo
            try:
                make.wait(30)
            finally:
                with contextlib.suppress(ProcessLookupError):  # never leave a demo running
                    os.killpg(make.pid, signal.SIGKILL)
    site = next((copy / ".venv" / "lib").glob("python3*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert "opencv_python_headless" in installed and "opencv_python" not in installed, installed
    assert not installed & {"pytest", "selenium", "ruff"}, installed
