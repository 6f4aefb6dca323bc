"""Response parsing for every model type, and refusal of malformed bodies."""

import math

import pytest

from streamer.api.responses import parse_response
from streamer.errors import ApiMalformedResponse
from streamer.types import Result

DETECTION = {
    "inference_id": "abc",
    "time": 0.041,
    "image": {"width": 640, "height": 360},
    "predictions": [
        {
            "x": 189.5,
            "y": 100,
            "width": 163,
            "height": 186,
            "confidence": 0.544,
            "class": "helmet",
            "class_id": 0,
            "detection_id": "d1",
        }
    ],
}


def test_detection():
    parsed = parse_response(DETECTION)
    assert parsed.labels == ()
    assert (parsed.image_width, parsed.image_height) == (640, 360)
    assert parsed.time_s == 0.041 and parsed.inference_id == "abc"
    (det,) = parsed.detections
    assert (det.class_name, det.class_id, det.detection_id, det.confidence) == ("helmet", 0, "d1", 0.544)
    assert det.xyxy == (189.5 - 81.5, 100 - 93, 189.5 + 81.5, 100 + 93)


def test_segmentation_points_are_kept():
    data = {"predictions": [{**DETECTION["predictions"][0], "points": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}]}
    (det,) = parse_response(data).detections
    assert det.points == ((1, 2), (3, 4))
    assert det.as_dict()["points"][1] == {"x": 3, "y": 4}  # as published


def test_keypoints_are_kept():
    kp = [{"x": 5, "y": 6, "confidence": 0.9, "class_id": 0, "class": "nose"}]
    data = {"predictions": [{**DETECTION["predictions"][0], "keypoints": kp}]}
    (det,) = parse_response(data).detections
    assert det.keypoints[0].class_name == "nose" and det.keypoints[0].confidence == 0.9
    assert det.as_dict()["keypoints"] == kp  # as published


def test_classification_single_label():
    data = {
        "predictions": [
            {"class": "cat", "class_id": 0, "confidence": 0.9},
            {"class": "dog", "class_id": 1, "confidence": 0.1},
        ],
        "top": "cat",
        "confidence": 0.9,
    }
    parsed = parse_response(data)
    assert parsed.labels and not parsed.detections
    assert [(label.class_name, label.confidence) for label in parsed.labels] == [("cat", 0.9), ("dog", 0.1)]
    assert parsed.extra == {"top": "cat", "confidence": 0.9}


def test_classification_multi_label():
    data = {
        "predictions": {"cat": {"confidence": 0.9, "class_id": 0}, "dog": {"confidence": 0.7, "class_id": 1}},
        "predicted_classes": ["cat", "dog"],
    }
    parsed = parse_response(data)
    assert parsed.labels and parsed.multi_label
    assert {label.class_name for label in parsed.labels} == {"cat", "dog"}
    kept = parsed.filtered(["dog"])
    result = Result("cam", 1, 0, 0, 10, 10, labels=kept.labels, multi_label=True)
    assert result.predictions() == {"dog": {"confidence": 0.7, "class_id": 1}}  # the API's form, as published


def test_empty_predictions_is_a_detection_with_nothing_found():
    parsed = parse_response({"predictions": [], "image": {"width": 1, "height": 1}})
    assert parsed.detections == () and parsed.labels == ()


@pytest.mark.parametrize(
    "body, reason",
    [
        ([], "expected a JSON object"),
        ("<html>", "expected a JSON object"),
        ({"image": {}}, "no 'predictions'"),
        ({"predictions": "none"}, "not a list"),
        ({"predictions": [{"x": 1, "y": 1, "width": 2, "class": "a", "confidence": 1}]}, "height"),
        ({"predictions": [{"x": "1", "y": 1, "width": 2, "height": 2, "class": "a", "confidence": 1}]}, ".x"),
        ({"predictions": [{"x": math.nan, "y": 1, "width": 2, "height": 2, "class": "a", "confidence": 1}]}, ".x"),
        ({"predictions": [{"x": 1, "y": 1, "width": -2, "height": 2, "class": "a", "confidence": 1}]}, "negative"),
        ({"predictions": [{"x": 1, "y": 1, "width": 2, "height": 2, "class": 3, "confidence": 1}]}, "class"),
        ({"predictions": [{"x": 1, "y": 1, "width": 2, "height": 2, "class": "a"}]}, "confidence"),
        (
            {
                "predictions": [
                    {"x": 1, "y": 1, "width": 2, "height": 2, "class": "a", "confidence": 1, "points": [{"x": 1}]}
                ]
            },
            "points",
        ),
        ({"predictions": {"cat": 0.5}}, "confidence"),
    ],
)
def test_malformed_is_refused_with_a_reason(body, reason):
    with pytest.raises(ApiMalformedResponse, match=reason):
        parse_response(body)


def test_filter_classes():
    box = {"x": 1, "y": 1, "width": 2, "height": 2, "confidence": 0.5}
    parsed = parse_response({"predictions": [{**box, "class": name} for name in "abc"]})
    assert [d.class_name for d in parsed.filtered(["a", "c"]).detections] == ["a", "c"]
    assert parsed.filtered([]) is parsed


def test_boxes_are_rescaled_once_into_the_frames_pixels():
    import numpy as np

    from streamer.types import Frame

    parsed = parse_response({**DETECTION, "image": {"width": 320, "height": 180}})
    frame = Frame("cam", 3, 10.0, 5.0, np.zeros((360, 640, 3), np.uint8))
    result = parsed.result_for(frame, (320, 180), "m/1", 11.0, 12.0)
    (det,) = result.detections
    assert (det.x, det.y, det.width, det.height) == (379.0, 200.0, 326.0, 372.0)
    assert (result.width, result.height, result.frame_id, result.captured_mono) == (640, 360, 3, 5.0)
    back = result.rescaled_to(320, 180).detections[0]
    assert (back.x, back.width) == (189.5, 163.0)


def test_message_carries_extra_top_level_fields_without_clobbering_ours():
    from streamer.message import result_message
    from streamer.types import Label, Result

    result = Result(
        "cam",
        7,
        1.0,
        1.0,
        640,
        480,
        labels=(Label("cat", 0.9),),
        model="m/1",
        sent_at=2.0,
        received_at=3.0,
        extra={"top": "cat", "confidence": 0.9, "frame_id": 999},
    )
    msg = result_message(result, published_at=4.0)
    assert msg["predictions"] == [{"class": "cat", "confidence": 0.9}]
    assert msg["top"] == "cat" and msg["confidence"] == 0.9
    assert msg["frame_id"] == 7  # ours wins
    assert (msg["captured_at"], msg["sent_at"], msg["received_at"], msg["published_at"]) == (1.0, 2.0, 3.0, 4.0)


def test_a_non_finite_number_in_an_extra_field_is_published_as_null():
    import json

    from streamer.message import encode_message, result_message
    from streamer.types import Result

    result = Result(
        "cam",
        7,
        1.0,
        1.0,
        640,
        480,
        model="m/1",
        sent_at=2.0,
        received_at=3.0,
        extra={"score": float("nan"), "nested": {"spread": [1.5, float("-inf")]}},
    )
    message = json.loads(encode_message(result_message(result, published_at=4.0)))
    assert message["score"] is None and message["nested"] == {"spread": [1.5, None]}
    assert message["frame_id"] == 7 and message["published_at"] == 4.0
