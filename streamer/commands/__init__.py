"""The command line: ``streamer run | demo | predict | video | listen | serve | keygen``."""

from streamer import cvlog

cvlog.silence()  # before any command module imports cv2: OpenCV reads its log level then
