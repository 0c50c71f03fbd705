"""The inference API's HTTP server is bounded (issue 22, item 1): a request head must arrive whole,
small and soon, a body soon, and connections beyond ``max_connections`` get a 503. Real uvicorn on
loopback, raw sockets."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from device.serving.config import InferenceConfig
from device.serving.model import ServedModel
from device.serving.server import InferenceServer
from shared.httpserver import HttpLimits
from tests.security import images

pytestmark = pytest.mark.security


@pytest.fixture
def server(served_model: ServedModel) -> Iterator[InferenceServer]:
    limits = HttpLimits(max_connections=4, header_timeout_s=1.0, body_timeout_s=1.0)
    srv = InferenceServer(InferenceConfig(listen="127.0.0.1:0", http=limits))
    srv.start()
    srv.serve(served_model)
    try:
        yield srv
    finally:
        srv.stop()


def _connect(srv: InferenceServer) -> socket.socket:
    host, port = srv.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or 10 s pass)."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    sock.settimeout(seconds)
    try:
        return True, _read_all(sock)
    except TimeoutError:
        return False, b""


def test_a_slow_request_head_is_cut_off(server: InferenceServer) -> None:
    with _connect(server) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # ... and the rest never comes
        closed, answer = _closed_within(s, 4.0)
    assert closed and answer.startswith(b"HTTP/1.1 408"), answer[:100]


def test_an_idle_connection_is_closed(server: InferenceServer) -> None:
    with _connect(server) as s:
        assert _closed_within(s, 4.0)[0]


def test_an_oversized_request_head_is_refused(served_model: ServedModel) -> None:
    srv = InferenceServer(InferenceConfig(listen="127.0.0.1:0"))  # the default head limit (64 KiB)
    srv.start()
    srv.serve(served_model)
    try:
        with _connect(srv) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            try:
                for i in range(400):
                    s.sendall(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000))
                s.sendall(b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused while we were still sending: what we want
            answer = _closed_within(s, 5.0)[1]
    finally:
        srv.stop()
    assert answer.startswith(b"HTTP/1.1 431"), answer[:100]


def test_many_requests_on_one_keep_alive_connection_each_get_their_own_head_limit(
    server: InferenceServer,
) -> None:
    pad = b"X-Pad: " + b"a" * 20_000 + b"\r\n"
    with _connect(server) as s:
        for _ in range(10):  # 200 KB of heads in all, 20 KB each
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + pad + b"\r\n")
            head = s.recv(65536)
            assert head.startswith(b"HTTP/1.1 200"), head[:100]


def test_connections_beyond_the_limit_get_a_503(server: InferenceServer) -> None:
    with ExitStack() as idle:
        for _ in range(4):
            idle.enter_context(_connect(server))
        time.sleep(0.2)
        with _connect(server) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _read_all(s).startswith(b"HTTP/1.1 503")
    time.sleep(0.2)
    with _connect(server) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _read_all(s).startswith(b"HTTP/1.1 200")


def test_a_slow_body_is_cut_off(server: InferenceServer) -> None:
    png = images.encoded(".png", 32, 32)
    with _connect(server) as s:
        s.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\n\r\n" % len(png) + png[:20]
        )
        closed, answer = _closed_within(s, 5.0)
    assert closed and answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "body_timeout"
    assert server.telemetry.errors["body_timeout"] == 1
