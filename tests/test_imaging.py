"""Resize for upload and scale boxes back: the round trip must land on the original pixels."""

import base64
import threading

import cv2
import numpy as np
import pytest

from streamer.api.responses import parse_response
from streamer.imaging import fit_size, prepare_upload, resize_for_upload
from streamer.sources.synthetic import SyntheticScene
from streamer.standin.detector import detect
from streamer.types import Frame
from support.boxes import detections, iou_xyxy


@pytest.mark.parametrize(
    "size, max_side, expected",
    [
        ((1280, 720), 640, (640, 360)),
        ((720, 1280), 640, (360, 640)),  # portrait: the longest side is the height
        ((1920, 1080), 416, (416, 234)),
        ((640, 480), 640, (640, 480)),  # already small enough
        ((320, 240), 640, (320, 240)),  # never upscaled
        ((4000, 10), 100, (100, 1)),  # never below one pixel
    ],
)
def test_fit_size(size, max_side, expected):
    assert fit_size(*size, max_side) == expected


def test_resize_keeps_small_frames_untouched():
    image = np.zeros((240, 320, 3), np.uint8)
    assert resize_for_upload(image, 640) is image


def test_prepare_upload_is_base64_jpeg_of_the_resized_frame():
    image = SyntheticScene(1280, 720).render(5)
    upload = prepare_upload(image, 640, 80)
    decoded = cv2.imdecode(np.frombuffer(base64.b64decode(upload.body, validate=True), np.uint8), 1)
    assert decoded.shape == (360, 640, 3)
    assert (upload.sent_width, upload.sent_height) == (640, 360)


def test_rescaling_maps_boxes_points_and_keypoints():
    preds = [
        {
            "x": 100,
            "y": 50,
            "width": 20,
            "height": 10,
            "class": "a",
            "confidence": 0.9,
            "points": [{"x": 90, "y": 45}, {"x": 110, "y": 55}],
            "keypoints": [{"x": 100, "y": 50, "confidence": 0.8, "class": "nose", "class_id": 0}],
            "detection_id": "keep-me",
        }
    ]
    parsed = parse_response({"predictions": preds})
    det = parsed.detections[0].scaled(2.0, 3.0)
    out = det.as_dict()
    assert (out["x"], out["y"], out["width"], out["height"]) == (200, 150, 40, 30)
    assert out["points"] == [{"x": 180, "y": 135}, {"x": 220, "y": 165}]
    assert out["keypoints"][0]["x"] == 200 and out["keypoints"][0]["y"] == 150
    assert out["keypoints"][0]["class"] == "nose" and out["detection_id"] == "keep-me"
    assert parsed.detections[0].x == 100  # the original is not modified (frozen)


@pytest.mark.parametrize("width, height, max_side", [(1280, 720, 640), (1920, 1080, 416), (640, 480, 320)])
def test_round_trip_through_jpeg_and_detector_lands_on_truth(width, height, max_side):
    """Downscale, encode, detect in the small image, scale back: IoU with the truth >= 0.9."""
    scene = SyntheticScene(width, height)
    for frame_id in (0, 123, 456):
        image = scene.render(frame_id)
        upload = prepare_upload(image, max_side, 80)
        small = cv2.imdecode(np.frombuffer(base64.b64decode(upload.body), np.uint8), 1)
        parsed = parse_response({"predictions": detect(small)})
        frame = Frame("scene", frame_id, 0.0, 0.0, image)
        result = parsed.result_for(frame, (upload.sent_width, upload.sent_height), "m/1", 0.0, 0.0)
        truth = dict(scene.boxes(frame_id))
        assert sorted(d.class_name for d in result.detections) == sorted(truth)
        for det in result.detections:
            assert iou_xyxy(det.xyxy, truth[det.class_name]) >= 0.9


def test_iou():
    assert iou_xyxy((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou_xyxy((0, 0, 10, 10), (10, 10, 20, 20)) == 0.0
    assert iou_xyxy((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


def test_overlay_survives_absurd_boxes_and_draws_sane_ones():
    from streamer.outputs.overlay import draw_detections

    image = np.zeros((100, 200, 3), np.uint8)
    draw_detections(
        image,
        detections(
            [
                {
                    "x": 1e300,
                    "y": -1e300,
                    "width": 1e300,
                    "height": 1e300,
                    "class": "a",
                    "confidence": 0.5,
                    "points": [{"x": 1e300, "y": 0}],
                }
            ]
        ),
    )
    draw_detections(
        image, detections([{"x": 100, "y": 50, "width": 40, "height": 20, "class": "b", "confidence": 0.9}])
    )
    assert image.any()


def test_recorder_keeps_real_time_when_frames_were_missed_or_early(tmp_path):
    from streamer.outputs.recorder import Recorder

    recorder = Recorder(str(tmp_path / "r.avi"), lambda: 10.0)
    frame = np.zeros((48, 64, 3), np.uint8)
    for t in (100.0, 100.5, 100.52, 101.0):  # 0.5 s gap (4 frames missed), one early frame
        recorder.write(frame, t)
    recorder.close()
    video = cv2.VideoCapture(str(tmp_path / "r.avi"))
    assert video.get(cv2.CAP_PROP_FPS) == 10.0
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == 11  # 1 s of video at 10 fps, plus the first frame


@pytest.fixture
def opencv_threads():
    """Put OpenCV's thread count back as it was: the setting is process-wide."""
    before = cv2.getNumThreads()
    yield
    cv2.setNumThreads(before)


def test_opencv_runs_on_the_calling_thread_unless_the_environment_says(monkeypatch, opencv_threads):
    from streamer.imaging import limit_opencv_threads

    cv2.setNumThreads(4)
    monkeypatch.setenv("OPENCV_FOR_THREADS_NUM", "4")
    limit_opencv_threads()
    assert cv2.getNumThreads() == 4  # the user's choice stands
    monkeypatch.delenv("OPENCV_FOR_THREADS_NUM")
    limit_opencv_threads()
    assert cv2.getNumThreads() == 1


def test_the_live_pipeline_limits_opencv_threads_before_anything_else(monkeypatch, opencv_threads, tmp_path):
    from streamer.commands.run import run_pipeline
    from streamer.config import load
    from streamer.errors import ConfigError

    monkeypatch.delenv("OPENCV_FOR_THREADS_NUM", raising=False)
    cv2.setNumThreads(4)
    # A key file that is not there: refused at the first step, before anything opens.
    settings = {"source.uri": "synthetic", "api.model": "a/1", "api.api_key_file": str(tmp_path / "none")}
    config = load(None, settings, env={})
    with pytest.raises(ConfigError, match="api.api_key_file: cannot read"):
        run_pipeline(config, threading.Event())
    assert cv2.getNumThreads() == 1
