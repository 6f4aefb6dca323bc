"""docs/cameras.md's recipe for trying an RTSP source without a camera, run as written."""

from __future__ import annotations

import json
import re
import subprocess

from conftest import ROOT, free_port, need, need_tool

from streamer.sources.synthetic import SyntheticScene
from support.clips import write_clip
from support.rtsp import RTSP_PYTHON, rtsp_server_available


def recipe() -> list[str]:
    """The shell lines of the section's first code block."""
    text = (ROOT / "docs" / "cameras.md").read_text()
    section = text[text.index("## Try an RTSP source without a camera") :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)[1]
    return [line for line in block.splitlines() if line.strip()]


def test_the_documented_rtsp_server_serves_a_video_file_that_streamer_reads(tmp_path, spawn, api_server):
    ok, why = rtsp_server_available()
    need(ok, why)
    ffmpeg = need_tool("ffmpeg")
    apt, convert, serve = recipe()
    assert apt.startswith("sudo apt install ") and "gir1.2-gst-rtsp-server-1.0" in apt
    # A video as a user has it (MJPG in AVI), made into H.264 by the documented ffmpeg line.
    source = tmp_path / "my-video.avi"
    write_clip(source, SyntheticScene(640, 360, 30.0), 60)
    args = convert.split()
    assert args[0] == "ffmpeg"
    subprocess.run(
        [ffmpeg, "-y", "-loglevel", "error", *[str(source) if a == "my-video.mp4" else a for a in args[1:]]],
        cwd=tmp_path,
        check=True,
        timeout=60,
        capture_output=True,
    )
    port = free_port()
    command = serve.replace("8554", str(port)).split()
    assert command[:2] == [RTSP_PYTHON, "scripts/rtsp-server.py"]
    server = subprocess.Popen(
        [*command[:1], str(ROOT / command[1]), *command[2:]],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        ready = server.stdout.readline().strip()
        assert ready == f"READY rtsp://127.0.0.1:{port}/cam", ready
        out = tmp_path / "out.jsonl"
        run = spawn(
            [
                "run",
                "--source",
                f"rtsp://127.0.0.1:{port}/cam",
                "--model",
                "synthetic/1",
                "--api-url",
                api_server.url,
                "--headless",
                "--duration",
                "6",
                "--jsonl",
                str(out),
            ]
        )
        assert run.wait(30) == 0, run.stderr
        messages = [json.loads(line) for line in out.read_text().splitlines()]
        assert messages and {p["class"] for p in messages[-1]["predictions"]} == {
            "red-square",
            "green-circle",
            "blue-box",
        }
    finally:
        server.terminate()
        server.wait(10)
