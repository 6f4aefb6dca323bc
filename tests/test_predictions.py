"""Response parsing for every model type, and refusal of malformed bodies."""

import math

import pytest

from streamer.api.responses import filter_classes, parse_response
from streamer.errors import ApiMalformedResponse

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
    assert parsed.kind == "detection"
    assert (parsed.image_width, parsed.image_height) == (640, 360)
    assert parsed.time_s == 0.041 and parsed.inference_id == "abc"
    assert parsed.predictions[0]["class"] == "helmet"


def test_segmentation_points_are_kept():
    data = {"predictions": [{**DETECTION["predictions"][0], "points": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}]}
    assert parse_response(data).predictions[0]["points"][1] == {"x": 3, "y": 4}


def test_keypoints_are_kept():
    kp = [{"x": 5, "y": 6, "confidence": 0.9, "class_id": 0, "class": "nose"}]
    data = {"predictions": [{**DETECTION["predictions"][0], "keypoints": kp}]}
    assert parse_response(data).predictions[0]["keypoints"] == kp


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
    assert parsed.kind == "classification"
    assert parsed.extra == {"top": "cat", "confidence": 0.9}


def test_classification_multi_label():
    data = {
        "predictions": {"cat": {"confidence": 0.9, "class_id": 0}, "dog": {"confidence": 0.7, "class_id": 1}},
        "predicted_classes": ["cat", "dog"],
    }
    parsed = parse_response(data)
    assert parsed.kind == "classification" and set(parsed.predictions) == {"cat", "dog"}
    assert filter_classes(parsed.predictions, ["dog"]) == {"dog": {"confidence": 0.7, "class_id": 1}}


def test_empty_predictions_is_a_detection_with_nothing_found():
    assert parse_response({"predictions": [], "image": {"width": 1, "height": 1}}).predictions == []


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
    preds = [{"class": "a"}, {"class": "b"}, {"class": "c"}]
    assert filter_classes(preds, ["a", "c"]) == [{"class": "a"}, {"class": "c"}]
    assert filter_classes(preds, []) is preds


def test_message_carries_extra_top_level_fields_without_clobbering_ours():
    from streamer.live.frames import Result
    from streamer.outputs.message import result_message

    result = Result(
        "cam",
        7,
        1.0,
        1.0,
        640,
        480,
        [{"class": "cat", "confidence": 0.9}],
        "m/1",
        2.0,
        3.0,
        extra={"top": "cat", "confidence": 0.9, "frame_id": 999},
    )
    msg = result_message(result, published_at=4.0)
    assert msg["top"] == "cat" and msg["confidence"] == 0.9
    assert msg["frame_id"] == 7  # ours wins
    assert (msg["captured_at"], msg["sent_at"], msg["received_at"], msg["published_at"]) == (1.0, 2.0, 3.0, 4.0)


def test_a_non_finite_number_in_an_extra_field_is_published_as_null():
    import json

    from streamer.live.frames import Result
    from streamer.outputs.message import encode_message, result_message

    result = Result(
        "cam",
        7,
        1.0,
        1.0,
        640,
        480,
        [],
        "m/1",
        2.0,
        3.0,
        extra={"score": float("nan"), "nested": {"spread": [1.5, float("-inf")]}},
    )
    message = json.loads(encode_message(result_message(result, published_at=4.0)))
    assert message["score"] is None and message["nested"] == {"spread": [1.5, None]}
    assert message["frame_id"] == 7 and message["published_at"] == 4.0
