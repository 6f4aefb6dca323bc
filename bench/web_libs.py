"""Which server library for the web page: aiohttp against Starlette on uvicorn, side by side.

Each library serves the same multipart MJPEG stream (one 960x540 JPEG, 10 frames a second
to each viewer) from one thread, in a process of its own; the viewers read it from another
process.  Reported for 0, 1 and 20 viewers: the server process's RSS and its CPU (% of one
core) over the measuring window.  Starlette and uvicorn are not dependencies of streamer:
  .venv/bin/pip install starlette uvicorn && .venv/bin/python bench/web_libs.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time

BOUNDARY = "frame"
FPS = 10.0


def _jpeg() -> bytes:
    """About the size of a 960x540 JPEG of a camera scene; the servers only pass bytes on,
    so neither imports OpenCV and the RSS is the library's and Python's alone."""
    return os.urandom(60_000)


def _part(jpeg: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    return head.encode() + jpeg + b"\r\n"


def serve_aiohttp(port: int) -> None:
    from aiohttp import web

    part = _part(_jpeg())

    async def stream(request):
        response = web.StreamResponse(headers={"Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}"})
        await response.prepare(request)
        try:
            while True:
                await response.write(part)
                await asyncio.sleep(1 / FPS)
        except ConnectionError:  # the viewer left
            return response

    app = web.Application()
    app.router.add_get("/stream.mjpg", stream)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=False)


def serve_starlette(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    part = _part(_jpeg())

    async def frames():
        while True:
            yield part
            await asyncio.sleep(1 / FPS)

    async def stream(request):
        return StreamingResponse(frames(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}")

    app = Starlette(routes=[Route("/stream.mjpg", stream)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


def viewers(port: int, count: int, stop_after_s: float) -> None:
    """count threads, each reading the stream until the time is up."""
    import httpx

    deadline = time.monotonic() + stop_after_s

    def read() -> None:
        with httpx.stream("GET", f"http://127.0.0.1:{port}/stream.mjpg", timeout=10) as response:
            for _ in response.iter_bytes():
                if time.monotonic() > deadline:
                    return

    threads = [threading.Thread(target=read, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(stop_after_s + 5)


def measure(library: str, count: int, seconds: float) -> dict:
    from web import free_port, proc_cpu_s, proc_rss_mib  # bench/web.py, beside this file

    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", library, "--port", str(port)])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        client = None
        if count:
            args = [sys.executable, __file__, "--view", str(count), "--port", str(port), "--seconds", str(seconds + 3)]
            client = subprocess.Popen(args)
        time.sleep(2)  # connections made, steady state
        cpu0, t0 = proc_cpu_s(server.pid), time.monotonic()
        time.sleep(seconds)
        cpu = (proc_cpu_s(server.pid) - cpu0) / (time.monotonic() - t0) * 100
        rss = proc_rss_mib(server.pid)
        if client:
            client.wait(seconds + 10)
        return {"library": library, "viewers": count, "cpu_percent": round(cpu, 1), "rss_mib": round(rss, 1)}
    finally:
        server.kill()
        server.wait(5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve", choices=("aiohttp", "starlette"))
    p.add_argument("--view", type=int)
    p.add_argument("--port", type=int)
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    if args.serve:
        {"aiohttp": serve_aiohttp, "starlette": serve_starlette}[args.serve](args.port)
        return
    if args.view:
        viewers(args.port, args.view, args.seconds)
        return
    for library in ("aiohttp", "starlette"):
        for count in (0, 1, 20):
            print(json.dumps(measure(library, count, args.seconds)), flush=True)


if __name__ == "__main__":
    main()
