"""``streamer serve``: a local stand-in for the detection API, with a detector for the synthetic scene."""
