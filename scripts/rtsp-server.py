#!/usr/bin/python3
"""Small RTSP test server (GStreamer GstRtspServer through Debian's python3-gi).

Run it with Debian's interpreter (python3-gi is not importable from a venv):

    /usr/bin/python3 scripts/rtsp-server.py --port PORT [--host 127.0.0.1]
        [--mount /cam] (--file CLIP.mp4 | --live) [--fps 30 --width 640 --height 360]
        [--user USER --password PASSWORD]

--file CLIP.mp4  serves an H.264 MP4 (e.g. from `ffmpeg -c:v libx264`), looped forever, in real time.
--live           serves a moving videotestsrc pattern, encoded with x264enc (--fps/--width/
                 --height apply to --live only; a clip keeps its own size and rate).
--port 0         lets the OS choose a free port (the READY line shows it).
--user/--password  ask for them (digest authentication, as IP cameras do): 401 without them.

The media is shared (one pipeline for every client). Prints exactly one line
`READY rtsp://HOST:PORT/MOUNT` on stdout once listening; everything else goes to stderr.
SIGTERM / SIGINT exit with code 0. Exit code 2: bad arguments or unreadable clip; 3: cannot bind.

How the file loops: the clip's encoded H.264 access units are demuxed once into memory (a
filesrc ! qtdemux ! h264parse ! appsink pipeline run to EOS), then pushed again and again into an
`appsrc` with timestamps shifted by one clip period per loop. Seeking on EOS inside an RTSP media
pipeline is fragile (the media owns the bus, flushing seeks reset running time), and multifilesrc
cannot loop an MP4. The appsrc is not live, so the RTSP server's sinks sync on the timestamps: the
clip is played at its own frame rate, like a camera, not as fast as possible.
"""

import argparse
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def log(msg):
    print(f"rtsp_server[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


def load_clip(path):
    """Demux an MP4 into a list of H.264 access units. Returns (caps_string, samples, period_ns)."""
    pipe = Gst.parse_launch(
        "filesrc name=src ! qtdemux ! h264parse "
        "! video/x-h264,stream-format=avc,alignment=au ! appsink name=sink sync=false"
    )
    pipe.get_by_name("src").set_property("location", path)
    sink = pipe.get_by_name("sink")
    pipe.set_state(Gst.State.PLAYING)
    caps, samples = None, []
    while True:
        sample = sink.emit("try-pull-sample", 10 * Gst.SECOND)
        if sample is None:
            break
        caps = caps or sample.get_caps().to_string()
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        if not ok:
            continue
        data = bytes(info.data)
        buf.unmap(info)
        samples.append((buf.pts, buf.dts, buf.duration, buf.get_flags(), data))
    # Report demux errors (missing file, not an MP4, no H.264 track).
    msg = pipe.get_bus().pop_filtered(Gst.MessageType.ERROR)
    pipe.set_state(Gst.State.NULL)
    if msg is not None:
        err, _dbg = msg.parse_error()
        raise RuntimeError(f"cannot read {path}: {err.message}")
    if not samples:
        raise RuntimeError(f"no H.264 video in {path}")

    def valid(t):
        return t != Gst.CLOCK_TIME_NONE

    pts = [s[0] for s in samples if valid(s[0])]
    dts = [s[1] for s in samples if valid(s[1])]
    durs = [s[2] for s in samples if valid(s[2])]
    frame = int(sorted(durs)[len(durs) // 2]) if durs else Gst.SECOND // 30
    # Period of one loop: from the first displayed frame to the end of the last one.
    period = max(max(pts) + frame - min(pts), frame)
    start = min(pts + dts)
    # Rebase so the first timestamp is 0 (B-frame clips have DTS < PTS).
    samples = [
        (p - start if valid(p) else p, d - start if valid(d) else d, du, fl, data) for p, d, du, fl, data in samples
    ]
    return caps, samples, period


class LoopingFileFactory(GstRtspServer.RTSPMediaFactory):
    """Media factory whose pipeline is appsrc ! h264parse ! rtph264pay, fed by a looping clip."""

    def __init__(self, caps, samples, period):
        super().__init__()
        self.caps, self.samples, self.period = caps, samples, period
        self.set_launch(
            "( appsrc name=src format=time is-live=false block=false "
            "! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
        )
        self.connect("media-configure", self._on_media_configure)

    def _on_media_configure(self, _factory, media):
        # Called once per (shared) media; a new media is built after all clients have left.
        src = media.get_element().get_by_name("src")
        src.set_property("caps", Gst.Caps.from_string(self.caps))
        state = {"index": 0, "loop": 0}
        src.connect("need-data", self._on_need_data, state)
        log("media configured (clip starts from the beginning)")

    def _on_need_data(self, src, _length, state):
        # Push one access unit per request; sinks sync on timestamps, so this is paced in real time.
        pts, dts, dur, flags, data = self.samples[state["index"]]
        shift = state["loop"] * self.period
        buf = Gst.Buffer.new_wrapped(data)
        buf.pts = pts + shift if pts != Gst.CLOCK_TIME_NONE else pts
        buf.dts = dts + shift if dts != Gst.CLOCK_TIME_NONE else dts
        buf.duration = dur
        buf.set_flags(flags & Gst.BufferFlags.DELTA_UNIT)
        state["index"] += 1
        if state["index"] == len(self.samples):
            state["index"] = 0
            state["loop"] += 1
        src.emit("push-buffer", buf)


def live_launch(fps, width, height):
    return (
        "( videotestsrc is-live=true horizontal-speed=4 "
        f"! video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
        "! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )


def require_login(server, factory, user, password):
    """Let only USER:PASSWORD in, with digest authentication; anyone else gets 401."""
    auth = GstRtspServer.RTSPAuth()
    auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
    auth.add_digest(user, password, token)
    server.set_auth(auth)
    role = Gst.Structure.new_from_string("viewer")
    role.set_value(GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
    role.set_value(GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
    factory.add_role_from_structure(role)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True, help="TCP port for RTSP (0 = any free port)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--mount", default="/cam", help="mount path (default /cam)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--file", help="H.264 MP4 clip to serve in a loop")
    src.add_argument("--live", action="store_true", help="serve a live videotestsrc pattern")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--user", help="with --password: the one user allowed in (digest authentication)")
    ap.add_argument("--password")
    args = ap.parse_args(argv)
    if bool(args.user) != bool(args.password):
        ap.error("--user and --password go together")
    if not args.mount.startswith("/"):
        args.mount = "/" + args.mount
    return args


def main(argv=None):
    args = parse_args(argv)
    Gst.init(None)
    loop = GLib.MainLoop()

    if args.file:
        # Read the whole clip now: the file may live in a temp dir deleted later, and a bad
        # clip should fail at start-up, not at the first client's DESCRIBE.
        try:
            caps, samples, period = load_clip(os.path.abspath(args.file))
        except RuntimeError as exc:
            log(str(exc))
            return 2
        log(f"clip {args.file}: {len(samples)} access units, loop period {period / Gst.SECOND:.3f} s")
        factory = LoopingFileFactory(caps, samples, period)
    else:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(live_launch(args.fps, args.width, args.height))
    factory.set_shared(True)
    # Without a unicast address pool, RTP/RTCP over UDP is sent from sockets bound to 0.0.0.0/[::].
    # A pool restricted to the RTSP host keeps those on the same address (a port
    # already taken, e.g. by another test server, is skipped: verified with two servers).
    pool = GstRtspServer.RTSPAddressPool()
    pool.add_range(args.host, args.host, 20000, 60000, 0)
    factory.set_address_pool(pool)

    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.mount, factory)
    if args.user:
        require_login(server, factory, args.user, args.password)
    # attach() returns 0 (and logs a GLib warning) when the port cannot be bound.
    if server.attach(None) == 0:
        log(f"cannot bind {args.host}:{args.port}")
        return 3

    def on_signal(signame):
        log(f"{signame}: exiting")
        loop.quit()
        return GLib.SOURCE_REMOVE

    # A GLib main loop never returns to Python, so Python signal handlers would not run: use GLib's.
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, on_signal, "SIGTERM")
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, on_signal, "SIGINT")

    # Remove stale sessions (clients that vanished without TEARDOWN) every 2 s.
    def cleanup():
        server.get_session_pool().cleanup()
        return GLib.SOURCE_CONTINUE

    GLib.timeout_add_seconds(2, cleanup)

    print(f"READY rtsp://{args.host}:{server.get_bound_port()}{args.mount}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: finalizing GStreamer objects while streaming threads are still
    # running can hang or crash, and the test only cares about a prompt, clean exit code.
    os._exit(code)
