"""Where frames come from: opening a source, the capture thread, and the synthetic scene."""
