"""Webcam settings (source.width/height/fps/fourcc), with a fake camera: no webcam can exist here.

The fake behaves as a V4L2 USB camera does: the pixel format decides which modes exist (1080p at
30 fps only in MJPG), a size or rate it lacks is replaced by the nearest it has, and ``set`` says
nothing about that.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

import streamer.sources.open as sources
from streamer.config import ConfigError, load
from streamer.sources.camera import fourcc_text
from streamer.sources.open import make_source

MODES = {  # pixel format -> (width, height, fps) it offers
    "YUYV": [(640, 480, 30.0), (1920, 1080, 5.0)],
    "MJPG": [(640, 480, 30.0), (1920, 1080, 30.0)],
}


class FakeUsbCamera:
    """Stands in for cv2.VideoCapture(0) on a USB camera."""

    instances: list[FakeUsbCamera] = []

    def __init__(self, index, *args):
        assert index == 0
        self.calls: list[tuple[str, float]] = []
        self.format, (self.width, self.height, self.fps) = "YUYV", MODES["YUYV"][0]
        self.reads = 0
        FakeUsbCamera.instances.append(self)

    def isOpened(self):
        return True

    def set(self, prop, value):
        assert self.reads == 0, "set after the first read"
        names = {cv2.CAP_PROP_FOURCC: "fourcc", cv2.CAP_PROP_FRAME_WIDTH: "width"}
        names.update({cv2.CAP_PROP_FRAME_HEIGHT: "height", cv2.CAP_PROP_FPS: "fps"})
        self.calls.append((names[prop], value))
        if prop == cv2.CAP_PROP_FOURCC and fourcc_text(value) in MODES:
            self.format = fourcc_text(value)
        elif prop in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT):
            key = 0 if prop == cv2.CAP_PROP_FRAME_WIDTH else 1
            self.width, self.height, self.fps = min(MODES[self.format], key=lambda m: abs(m[key] - value))
        elif prop == cv2.CAP_PROP_FPS:
            sizes = [m for m in MODES[self.format] if m[:2] == (self.width, self.height)]
            self.fps = min(sizes, key=lambda m: abs(m[2] - value))[2]
        else:  # a format the camera lacks: it keeps the one it has
            pass
        return True

    def get(self, prop):
        return {
            cv2.CAP_PROP_FOURCC: float(cv2.VideoWriter_fourcc(*self.format)),
            cv2.CAP_PROP_FRAME_WIDTH: float(self.width),
            cv2.CAP_PROP_FRAME_HEIGHT: float(self.height),
            cv2.CAP_PROP_FPS: self.fps,
        }.get(prop, 0.0)

    def read(self):
        self.reads += 1
        return True, np.zeros((self.height, self.width, 3), np.uint8)

    def release(self):
        pass


@pytest.fixture
def camera(monkeypatch):
    FakeUsbCamera.instances = []
    monkeypatch.setattr(sources.cv2, "VideoCapture", FakeUsbCamera)
    return FakeUsbCamera.instances


def _open(settings: dict):
    source = make_source(load(None, {"source.uri": "0", **{f"source.{k}": v for k, v in settings.items()}}, env={}))
    source.open()
    return source


def test_mjpg_1080p30_is_asked_for_format_first_and_what_it_gave_is_logged_once(camera, caplog):
    caplog.set_level(logging.INFO, logger="streamer.sources.open")
    source = _open({"width": 1920, "height": 1080, "fps": 30, "fourcc": "MJPG"})
    assert [name for name, _ in camera[0].calls] == ["fourcc", "width", "height", "fps"]
    assert source.read().shape == (1080, 1920, 3)
    again = source.fresh()  # a reopen after a stall or a drop gives the same mode: no second line
    again.open()
    source.open()
    lines = [r.getMessage() for r in caplog.records if "gives" in r.getMessage()]
    assert lines == ["webcam 0 gives 1920x1080 @ 30 fps MJPG"]
    assert [r.levelno for r in caplog.records if "gives" in r.getMessage()] == [logging.INFO]


def test_a_mode_the_camera_lacks_is_a_warning_saying_what_was_asked(camera, caplog):
    caplog.set_level(logging.INFO, logger="streamer.sources.open")
    source = _open({"width": 1920, "height": 1080, "fps": 30})  # YUYV: 1080p only at 5 fps
    assert source.read().shape == (1080, 1920, 3)
    (record,) = [r for r in caplog.records if "gives" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("webcam 0 gives 1920x1080 @ 5 fps YUYV (asked for fps 30: not a mode")


@pytest.mark.parametrize(
    ("reported", "line", "level"),
    [
        (30.00003, "webcam 0 gives 1920x1080 @ 30 fps MJPG", logging.INFO),
        (29.97, "webcam 0 gives 1920x1080 @ 29.97 fps MJPG", logging.INFO),
        (29.7, "webcam 0 gives 1920x1080 @ 29.7 fps MJPG", logging.INFO),  # 1 % off, in floating point
        (0.0, "webcam 0 gives 1920x1080 @ ? fps MJPG (asked for fps 30: the camera does not report it)", logging.INFO),
        (
            25.0,
            "webcam 0 gives 1920x1080 @ 25 fps MJPG (asked for fps 30: not a mode it has; "
            "v4l2-ctl --list-formats-ext lists them)",
            logging.WARNING,
        ),
    ],
)
def test_fps_within_one_percent_is_what_was_asked_and_an_unreported_one_is_no_refusal(
    camera, caplog, monkeypatch, reported, line, level
):
    caplog.set_level(logging.INFO, logger="streamer.sources.open")
    real_get = FakeUsbCamera.get
    monkeypatch.setattr(
        FakeUsbCamera, "get", lambda self, prop: reported if prop == sources.cv2.CAP_PROP_FPS else real_get(self, prop)
    )
    _open({"width": 1920, "height": 1080, "fps": 30, "fourcc": "MJPG"})
    assert [(r.getMessage(), r.levelno) for r in caplog.records if "gives" in r.getMessage()] == [(line, level)]


def test_without_settings_the_camera_is_left_alone(camera, caplog):
    caplog.set_level(logging.INFO, logger="streamer.sources.open")
    source = _open({})
    assert camera[0].calls == []
    assert source.read().shape == (480, 640, 3)
    assert [r.getMessage() for r in caplog.records if "gives" in r.getMessage()] == [
        "webcam 0 gives 640x480 @ 30 fps YUYV"
    ]


def test_fourcc_is_read_back_as_text():
    assert fourcc_text(cv2.VideoWriter_fourcc(*"MJPG")) == "MJPG"
    assert fourcc_text(float(cv2.VideoWriter_fourcc(*"YUYV"))) == "YUYV"
    assert fourcc_text(0) is None and fourcc_text(-1) is None  # the backend does not say


@pytest.mark.parametrize(
    "key, value, reason",
    [
        ("fourcc", "MJPEG", "expected a four-character code such as MJPG"),
        ("fourcc", 1234, "expected a four-character code"),
        ("width", 0, "expected a whole number from 1 to 7680"),
        ("height", 1080.5, "expected a whole number from 1 to 4320"),
        ("fps", 0, "expected a number above 0"),
    ],
)
def test_bad_camera_settings_name_the_key(key, value, reason):
    with pytest.raises(ConfigError, match=rf"^source\.{key}: {reason}"):
        load(None, {f"source.{key}": value}, env={})


@pytest.mark.parametrize(
    "uri, kind",
    [("rtsp://127.0.0.1/cam", "stream"), ("gst:videotestsrc ! appsink", "gst"), ("synthetic", "synthetic")],
)
def test_camera_settings_on_another_source_are_refused(uri, kind):
    with pytest.raises(ConfigError, match=rf"^source\.fourcc: applies to webcams only, .* names a {kind} source"):
        load(None, {"source.uri": uri, "source.fourcc": "MJPG"}, env={})
