"""Free loopback ports for servers started side by side (the demo's HTTP server and embedded broker, tests)."""

from __future__ import annotations

import socket

from shared.errors import EdgeloopError

_HANDED_OUT: set[int] = set()


def free_loopback_port() -> int:
    """A loopback port nobody listens on, never one this process handed out before: two calls in a row
    could otherwise get the same port back from the kernel, and the second server would not start."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise EdgeloopError("no free loopback port that was not handed out already")
