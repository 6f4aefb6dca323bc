"""Where results go: the message, ZeroMQ, CURVE, JSONL, the recorder, the overlay, the window, systemd."""
