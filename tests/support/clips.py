"""Test clips of the synthetic scene: an MJPG .avi, and an H.264 .mp4 an RTSP server can play."""

from __future__ import annotations

from pathlib import Path

from streamer.sources.synthetic import SyntheticScene
from support.rtsp import encode_h264


def write_clip(path: Path, scene: SyntheticScene, frames: int) -> Path:
    """An MJPG .avi of the scene's first frames, at its size and frame rate (frame n = scene frame n)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), scene.fps, (scene.width, scene.height))
    for i in range(frames):
        writer.write(scene.render(i))
    writer.release()
    return path


def camera_clip(folder: Path, scene: SyntheticScene, frames: int, name: str = "camera.mp4") -> Path:
    """An H.264 clip of the scene for scripts/rtsp-server.py (needs Debian's ffmpeg)."""
    raw = write_clip(folder / (Path(name).stem + "-raw.avi"), scene, frames)
    return encode_h264(raw, folder / name, fps=round(scene.fps))


def readable_frames(path) -> int:
    """How many frames OpenCV can read from a video file."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    return count
