"""The capture worker with a fake webcam (the one part that cannot exist here) and the synthetic source."""

import threading
import time

import numpy as np

import streamer.sources.open as sources
from streamer.queues import DropOldestQueue, Latest
from streamer.retry import Backoff
from streamer.sources.capture import CaptureWorker
from streamer.sources.open import CvSource, SyntheticSource, source_kind
from streamer.stats import Stats
from support.waiting import wait_until


class FakeWebcam:
    """Stands in for cv2.VideoCapture(0): delivers frames, then is 'unplugged' for a while."""

    opened = 0

    def __init__(self, index, *args):
        assert index == 0  # a webcam is opened by its index
        FakeWebcam.opened += 1
        self.reads = 0
        self.unplug_after = 20 if FakeWebcam.opened == 1 else 10**9
        self.width = 640 if FakeWebcam.opened == 1 else 320  # comes back at another size

    def isOpened(self):
        return True

    def get(self, prop):
        return 30.0

    def read(self):
        self.reads += 1
        time.sleep(0.005)
        if self.reads > self.unplug_after:
            return False, None
        return True, np.full((self.width * 3 // 4, self.width, 3), self.reads % 255, np.uint8)

    def release(self):
        pass


def test_source_kinds():
    assert source_kind("synthetic") == "synthetic"
    assert source_kind("0") == "webcam" and source_kind("/dev/video2") == "webcam"
    assert source_kind("rtsp://cam/stream") == "stream" and source_kind("https://x/y.mjpg") == "stream"
    assert source_kind("clip.mp4") == "file"


def test_unplugged_webcam_is_reopened_and_frames_resume_at_the_new_size(monkeypatch):
    FakeWebcam.opened = 0
    monkeypatch.setattr(sources.cv2, "VideoCapture", FakeWebcam)
    stop = threading.Event()
    queue, latest, stats = DropOldestQueue(1), Latest(), Stats()
    source = CvSource("0", kind="webcam")
    worker = CaptureWorker(source, queue, latest, stats, stop, backoff=Backoff(0.05, 0.2))
    worker.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (latest.get()[1] is not None and latest.get()[1].width == 320):
        time.sleep(0.02)
    stop.set()
    assert worker.join(2.0)  # the thread ended
    frame = latest.get()[1]
    assert frame.width == 320 and frame.height == 240
    assert FakeWebcam.opened == 2 and stats.source_reconnects == 1
    assert frame.frame_id == stats.frames_read - 1  # ids keep increasing across the reconnect
    assert queue.dropped > 0  # nobody consumed: the queue dropped the oldest and counted them


def test_synthetic_source_is_paced_and_ids_follow_the_scene():
    stop = threading.Event()
    queue, latest, stats = DropOldestQueue(1), Latest(), Stats()
    worker = CaptureWorker(SyntheticSource(320, 180, 50.0, stop), queue, latest, stats, stop)
    started = time.monotonic()
    worker.start()
    wait_until(lambda: stats.frames_read >= 50, 10, lambda: f"50 frames, {stats.frames_read} read")
    took_s = time.monotonic() - started
    stop.set()
    assert worker.join(2.0)
    assert took_s >= 0.8, took_s  # about a second for 50: paced, not as fast as possible
    frame = latest.get()[1]
    assert frame.source == "synthetic" and frame.frame_id == stats.frames_read - 1
    assert frame.captured_mono <= time.monotonic() and abs(frame.captured_at - time.time()) < 2


class HangingCamera:
    """A camera whose reads, after a few frames, block until released (opencv#22677)."""

    kind, is_file, is_live, fps = "stream", False, True, 30.0

    def __init__(self, release: threading.Event, made: list):
        self.name = "rtsp://cam/stream"
        self._release = release
        self._reads = 0
        made.append(self)
        self._made = made
        self.closed = False

    def fresh(self):
        return HangingCamera(self._release, self._made)

    def open(self):
        pass

    def read(self):
        self._reads += 1
        if self._reads > 3:
            self._release.wait(30)  # bounded, so a broken test cannot hang for ever
            return None
        time.sleep(0.01)
        return np.zeros((36, 64, 3), np.uint8)

    def close(self):
        self.closed = True


def test_the_stall_watchdog_reopens_a_fresh_source_and_gives_up_when_reads_never_return():
    release, made, stop = threading.Event(), [], threading.Event()
    stats = Stats()
    worker = CaptureWorker(HangingCamera(release, made), DropOldestQueue(1), Latest(), stats, stop, stall_timeout_s=1.0)
    worker.start()
    try:
        for expected in (1, 2):
            assert _wait(lambda n=expected: stats.frames_read >= 3 * n and worker._busy is not None)
            assert not worker.check_stall(time.monotonic())  # blocked, but not for long yet
            assert worker.check_stall(time.monotonic() + 5)  # abandoned: a fresh camera is read
            assert stats.source_stalls == expected and len(made) == expected + 1
        assert _wait(lambda: stats.frames_read >= 9 and worker._busy is not None)
        assert worker.check_stall(time.monotonic() + 5)  # a third blocked thread: give up
        assert stop.is_set() and "never returned" in str(worker.error)
        assert len(made) == 3 and stats.source_stalls == 3
    finally:
        stop.set()
        release.set()
    assert worker.join(3.0)  # once the reads return, every thread ends (none reads on)
    assert all(camera.closed for camera in made)


def _wait(condition, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not condition():
        time.sleep(0.01)
    return condition()
