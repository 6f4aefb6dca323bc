"""streamer: live object detection from a camera through a Roboflow-compatible API."""

__version__ = "0.1.0"
