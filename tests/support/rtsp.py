"""Test helpers: a real RTSP server (scripts/rtsp-server.py) driven from pytest.

The server needs GStreamer's RTSP server through Debian's python3-gi, so it always runs under
Debian's interpreter (RTSP_PYTHON), never the test venv. Stdlib only; every wait is bounded.

    ok, why = rtsp_server_available()
    encode_h264("in.avi", "clip.mp4")
    with RtspServer(clip="clip.mp4") as srv:      # or RtspServer(live=True), login=(USER, PASSWORD)
        cap = cv2.VideoCapture(srv.url, cv2.CAP_FFMPEG, [...])
        srv.freeze(); srv.thaw(); srv.kill(); srv.restart(); srv.stop()
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from support.ports import free_port  # noqa: F401  (bench/soak.py takes it from here)

RTSP_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).resolve().parent.parent.parent / "scripts" / "rtsp-server.py"
BIND_FAILED = 3  # rtsp-server.py's exit code when the port cannot be bound

_PROBE = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in "
    "('qtdemux', 'h264parse', 'rtph264pay', 'appsrc', 'videotestsrc', 'x264enc')) else 3)"
)


def rtsp_server_available() -> tuple[bool, str]:
    """(True, "") if the RTSP test server can run here, else (False, reason) for pytest.skip."""
    if not os.access(RTSP_PYTHON, os.X_OK):
        return False, f"{RTSP_PYTHON} not found"
    try:
        res = subprocess.run([RTSP_PYTHON, "-c", _PROBE], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"probing GstRtspServer failed: {exc}"
    if res.returncode == 3:
        return False, "GStreamer plugins missing (need plugins-base/good/bad/ugly)"
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["?"])[-1]
        return False, f"GstRtspServer not importable with {RTSP_PYTHON}: {tail}"
    return True, ""


def encode_h264(src_video_path, dst_mp4_path, fps: int | None = None, timeout: float = 120) -> Path:
    """Re-encode any video ffmpeg can read into an H.264 MP4 (libx264, yuv420p, 1 s GOP)."""
    ffmpeg = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
    gop = str(fps or 30)
    cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(src_video_path)]
    if fps:
        cmd += ["-r", str(fps)]
    cmd += ["-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", gop, str(dst_mp4_path)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=timeout)
    return Path(dst_mp4_path)


class RtspServer:
    """Run scripts/rtsp-server.py as a subprocess; use as a context manager.

    The server reads the whole clip at start-up, so the file may be deleted while the server
    runs, but it must exist again for restart().
    """

    def __init__(
        self,
        clip=None,
        live=False,
        port=None,
        mount="/cam",
        host="127.0.0.1",
        fps=30,
        width=640,
        height=360,
        ready_timeout=15.0,
        login=None,
    ):
        if bool(clip) == bool(live):
            raise ValueError("give exactly one of clip=PATH or live=True")
        self.clip = str(Path(clip).resolve()) if clip else None
        self.live, self.mount, self.host = live, mount, host
        self.fps, self.width, self.height = fps, width, height
        # port=None: the server binds port 0 and reports the port it got (no free_port race);
        # restart() then reuses that port.
        self.port = port
        self.ready_timeout = ready_timeout
        self.login = login  # (user, password): the server then answers 401 to anyone else
        self.url = None
        self.proc = None
        self._stderr = collections.deque(maxlen=200)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> RtspServer:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            code = self._start_once(deadline)
            if code is None:
                return self
            # A port in use (e.g. by the old server still dying) frees up quickly: retry briefly.
            if code == BIND_FAILED and self.port and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            why = f"no READY within {self.ready_timeout} s" if code == -1 else f"exit code {code}"
            raise RuntimeError(f"RTSP server did not start ({why}):\n{self.log()}")

    def _start_once(self, deadline):
        """Start the server; None when READY, else its exit code (or -1 on timeout)."""
        cmd = [
            RTSP_PYTHON,
            "-u",
            str(SERVER_SCRIPT),
            "--host",
            self.host,
            "--port",
            str(self.port or 0),
            "--mount",
            self.mount,
        ]
        if self.clip:
            cmd += ["--file", self.clip]
        else:
            cmd += ["--live", "--fps", str(self.fps), "--width", str(self.width), "--height", str(self.height)]
        if self.login:
            cmd += ["--user", self.login[0], "--password", self.login[1]]
        self.proc = proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        ready = threading.Event()
        found = []

        def read_stdout():
            for line in proc.stdout:  # drains until the process exits
                if line.startswith("READY ") and not found:
                    found.append(line.split()[1])
                    ready.set()
            proc.stdout.close()

        def read_stderr():
            for line in proc.stderr:
                self._stderr.append(line.rstrip("\n"))
            proc.stderr.close()

        threading.Thread(target=read_stdout, daemon=True).start()
        threading.Thread(target=read_stderr, daemon=True).start()
        while not ready.wait(0.05):
            if proc.poll() is not None:
                ready.wait(0.2)  # READY may still be in the pipe
                if not found:
                    time.sleep(0.1)  # let the stderr reader catch the reason
                    return proc.returncode
                break
            if time.monotonic() > deadline:
                self.kill()
                return -1
        self.url = found[0]
        self.port = int(self.url.rsplit(":", 1)[1].split("/", 1)[0])
        return None

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait up to `timeout` s, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.thaw()  # a stopped process cannot act on SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL (a crashed camera): clients see the connection drop."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def freeze(self) -> None:
        """SIGSTOP (a hung camera): sockets stay open but no data flows."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: undo freeze()."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> RtspServer:
        """Stop if still running, then start again on the same port and mount."""
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        """The last lines the server wrote to stderr."""
        return "\n".join(self._stderr)

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop(timeout=2.0)  # thaws, SIGTERMs, then SIGKILLs if needed
