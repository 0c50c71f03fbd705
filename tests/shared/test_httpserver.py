"""``shared.httpserver``: the head deadline and size cap are per request, so keep-alive and pipelined
clients that behave are never cut off; misbehaving ones get their refusal before the close."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from shared.httpserver import HttpLimits, uvicorn_config

pytestmark = pytest.mark.security

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def port() -> Iterator[int]:
    limits = HttpLimits(max_connections=8, header_timeout_s=1.0, max_header_kb=4, keep_alive_s=3)
    server = uvicorn.Server(uvicorn_config(_app, "127.0.0.1", 0, limits))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield server.servers[0].sockets[0].getsockname()[1]
    server.should_exit = True
    thread.join(10)


def _responses(sock: socket.socket, n: int) -> list[bytes]:
    data = b""
    while data.count(b"HTTP/1.1 ") < n or not data.endswith(b"ok"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return [b"HTTP/1.1 " + r for r in data.split(b"HTTP/1.1 ")[1:]]


def test_the_head_deadline_is_per_request_on_a_keep_alive_connection(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for _ in range(3):  # 3 x 0.7 s on one connection: longer than the 1 s deadline, each head within it
            s.sendall(GET[:10])
            time.sleep(0.7)
            s.sendall(GET[10:])
            assert _responses(s, 1)[0].startswith(b"HTTP/1.1 200")


def test_pipelined_requests_are_all_answered(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(GET * 5)
        assert [r[:12] for r in _responses(s, 5)] == [b"HTTP/1.1 200"] * 5


def test_a_head_over_the_cap_gets_a_431_before_the_close(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
        answer = _responses(s, 1)
    assert answer and answer[0].startswith(b"HTTP/1.1 431") and b"limited to 4,096 bytes" in answer[0]


def test_an_idle_keep_alive_connection_is_closed(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=6) as s:
        s.sendall(GET)
        assert _responses(s, 1)[0].startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        assert s.recv(1) == b""  # the keep-alive timeout (3 s), not the head deadline (1 s) of a request not begun
        assert 2.5 < time.monotonic() - t0 < 5
