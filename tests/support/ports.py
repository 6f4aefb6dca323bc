"""Free TCP ports for test servers, none handed out twice in a run, whichever xdist worker asks.

Each pytest-xdist worker (gw0, gw1 ...) takes ports from a block of its own, below the range the
kernel picks ephemeral ports from (32768-60999 on Linux), so neither another worker nor an
outgoing connection of this machine is given a port a test is about to bind. Within its block a
worker goes round from a random start (another checkout's suite may run on the same machine), and
a port is only handed out if it can be bound right now.
"""

from __future__ import annotations

import itertools
import os
import random
import socket

BASE, BLOCK, WORKERS = 20000, 800, 15  # ports 20000-31999: 15 workers' blocks of 800


def _worker() -> int:
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # not under xdist: the first block
    return int(name[2:]) % WORKERS if name.startswith("gw") and name[2:].isdigit() else 0


_first = BASE + _worker() * BLOCK
_start = random.randrange(BLOCK)
_next = itertools.cycle([*range(_first + _start, _first + BLOCK), *range(_first, _first + _start)])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and that this run has not handed out lately."""
    for _ in range(BLOCK):
        port = next(_next)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_first}-{_first + BLOCK - 1}")
