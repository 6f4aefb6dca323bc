"""Shared fixtures: real local servers, subprocess helpers, and the CI rule for system tools."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from streamer.sources.synthetic import SyntheticScene
from streamer.standin.server import ApiServer
from support.clips import write_clip  # noqa: F401  (re-exported for the tests)
from support.ports import free_port  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# The tests whose outcome depends on which OpenCV build is installed (marker opencv): capture,
# cameras, video files, RTSP and GStreamer, drawing and encoding, the recorder, the window, and
# the installed wheel.  make test runs every test; make test-opencv runs these again on Debian's
# OpenCV 4.6 and the newest 4.x wheel.  A module listed with ALL is marked whole; otherwise the
# named tests are.  tests/test_suite.py checks that every name here exists and that each module
# using a camera, a clip or a recording is listed.
ALL = frozenset({"*"})
OPENCV_TESTS: dict[str, frozenset[str]] = {
    "test_camera.py": ALL,
    "test_capture.py": ALL,
    "test_commands.py": ALL,  # predict reads images; video reads and writes video files (listen rides along)
    "test_display.py": ALL,
    "test_gstreamer.py": ALL,
    "test_imaging.py": ALL,
    "test_journal.py": ALL,  # OpenCV's and FFmpeg's own log lines about a camera
    "test_recorder.py": ALL,
    "test_rtsp.py": ALL,
    "test_secrets.py": ALL,  # an RTSP camera's password, in OpenCV's logs too
    "test_shutdown.py": ALL,  # a camera stuck opening or reading
    "test_try_rtsp.py": ALL,  # an RTSP camera read through OpenCV
    "test_faults.py": frozenset(
        {
            "test_a_result_for_a_frame_of_another_size_is_scaled_to_the_shown_frame",
            "test_a_full_disk_pauses_the_jsonl_file_and_the_recording_never_the_pipeline",
        }
    ),
    "test_hostile.py": frozenset(
        {
            "test_ten_thousand_boxes_parse_publish_and_draw_capped",
            "test_boxes_at_the_size_limit_are_scaled_drawn_and_published_as_numbers",
            "test_the_overlay_clips_absurd_boxes_instead_of_crashing",
            "test_multi_label_classification_with_odd_fields_is_drawn_as_labels",
            "test_long_class_names_are_cut_when_drawn",
            "test_an_unreadable_video_file_is_one_error_line_naming_it",
            "test_run_and_video_agree_that_an_unreadable_file_is_a_usage_error",
            "test_video_refuses_a_file_with_no_decodable_frame",
            "test_run_refuses_a_file_with_no_decodable_frame",
            "test_looping_a_file_with_no_decodable_frame_does_not_spin",
            "test_video_annotates_the_frames_a_truncated_file_still_has",
            "test_run_plays_what_a_truncated_file_still_has_and_exits_0",
        }
    ),
    # The venv without cv2 is the same whichever OpenCV runs the tests: built once, in make test.
    "test_install.py": frozenset(
        {"test_both_wheels_with_a_working_cv2_is_a_warning_only", "test_this_venv_has_one_working_opencv"}
    ),
    "test_run.py": frozenset(
        {
            "test_video_file_source_plays_and_ends_by_itself",
            "test_a_file_ends_cleanly_even_during_a_long_retry_after",
            "test_a_missing_webcam_is_named_with_a_hint_once_and_retried",
        }
    ),
    "test_server.py": frozenset({"test_detects_the_synthetic_shapes", "test_format_image_returns_a_drawn_jpeg"}),
    "test_web.py": frozenset({"test_encode_jpeg_shrinks_to_the_longest_side"}),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        listed = OPENCV_TESTS.get(item.path.name, frozenset())
        if listed is ALL or item.originalname in listed:
            item.add_marker(pytest.mark.opencv)


def need(condition: bool, reason: str) -> None:
    """Skip when a system tool is missing; under CI=true that is a failure instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI needs this but it is missing: {reason}")
    pytest.skip(reason)


def need_tool(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"{name} is not installed (see scripts/install-system-deps.sh)")
    return path


def rtsp_clip(tmp_path_factory, scene: SyntheticScene, frames: int = 90) -> Path:
    """An H.264 clip of the scene, for the real RTSP server; skips (fails under CI) without one."""
    from support.clips import camera_clip
    from support.rtsp import rtsp_server_available

    need_tool("ffmpeg")
    ok, why = rtsp_server_available()
    need(ok, why)
    return camera_clip(tmp_path_factory.mktemp("clip"), scene, frames)


@pytest.fixture
def api_server():
    """The stand-in API on 127.0.0.1, in this process (so a test can inject faults)."""
    with ApiServer("127.0.0.1", 0) as server:
        yield server


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "ROBOFLOW_API_KEY", "WAYLAND_DISPLAY")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Proc:
    """A streamer subprocess with its stdout and stderr kept in files (never a full pipe)."""

    def __init__(self, args: list[str], tmp_path: Path, env: dict[str, str] | None = None, name: str = "streamer"):
        self.out_path = tmp_path / f"{name}.out"
        self.err_path = tmp_path / f"{name}.err"
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "streamer", *args],
            stdout=self._out,
            stderr=self._err,
            env=env or clean_env(),
            cwd=tmp_path,
        )

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        finally:
            self._out.flush()
            self._err.flush()

    def wait_for_log(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr:
                return True
            if self.popen.poll() is not None:
                return text in self.stderr
            time.sleep(0.05)
        return False

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> tuple[int, float]:
        """Send sig; return (exit code, seconds until exit)."""
        started = time.monotonic()
        self.popen.send_signal(sig)
        code = self.wait(timeout)
        return code, time.monotonic() - started

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)
        self._out.close()
        self._err.close()


@pytest.fixture
def spawn(tmp_path):
    procs: list[Proc] = []

    def start(args: list[str], env: dict[str, str] | None = None, name: str = "streamer") -> Proc:
        proc = Proc(args, tmp_path, env, name)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.close()


class Subscriber:
    """A real ZeroMQ SUB socket for tests; every receive has a deadline."""

    def __init__(self, endpoint: str, topic: bytes = b"detections", curve: tuple[bytes, bytes, bytes] | None = None):
        """``curve``: (server public, client public, client secret) keys to read a CURVE feed."""
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        if curve:
            self.sock.curve_serverkey, self.sock.curve_publickey, self.sock.curve_secretkey = curve
        self.sock.setsockopt(zmq.SUBSCRIBE, topic)
        self.sock.connect(endpoint)

    def recv(self, timeout_s: float) -> list[bytes] | None:
        if self.sock.poll(int(timeout_s * 1000)):
            return self.sock.recv_multipart()
        return None

    def collect(self, count: int, timeout_s: float) -> list[list[bytes]]:
        deadline = time.monotonic() + timeout_s
        out = []
        while len(out) < count and time.monotonic() < deadline:
            msg = self.recv(max(0.01, deadline - time.monotonic()))
            if msg is not None:
                out.append(msg)
        return out

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


@pytest.fixture
def subscriber():
    subs: list[Subscriber] = []

    def make(
        endpoint: str, topic: bytes = b"detections", curve: tuple[bytes, bytes, bytes] | None = None
    ) -> Subscriber:
        sub = Subscriber(endpoint, topic, curve)
        subs.append(sub)
        return sub

    yield make
    for sub in subs:
        sub.close()


@pytest.fixture
def small_disk(tmp_path):
    """small_disk(size_kb): a tmpfs of its own to fill up for real, unmounted at the end; skips
    (fails under CI=true) where it cannot be mounted (needs root, or sudo without a password)."""
    from support.smallfs import small_fs

    with contextlib.ExitStack() as mounts:
        names = iter(range(100))

        def mount(size_kb: int) -> Path:
            where = mounts.enter_context(small_fs(tmp_path / f"fs{next(names)}", size_kb))
            need(where is not None, "cannot mount a tmpfs here (needs root, or sudo without a password)")
            return where

        yield mount


@pytest.fixture
def unanswered_port():
    """A port whose connection attempts go unanswered: a listener that never accepts, its accept
    queue filled, so the kernel drops further SYNs (Linux; skipped where that does not happen)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    address = listener.getsockname()
    fillers: list[socket.socket] = []
    try:
        for _ in range(8):
            filler = socket.socket()
            fillers.append(filler)
            filler.settimeout(0.2)
            try:
                filler.connect(address)
            except TimeoutError:
                break
        else:
            pytest.skip("connections past a full accept queue still complete here: cannot provoke a connect timeout")
        yield address[1]
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
