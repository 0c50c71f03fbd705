"""``edgeloop serve``'s HTTP server is bounded like the device's (issue 22, item 1): request heads
must arrive whole, small and soon, upload bodies soon, and connections beyond the limit get a 503."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from host.fleet.release import ReleaseStore
from host.fleet.server import HostServer, ServeConfig
from shared.httpserver import HttpLimits
from tests.helpers import free_port
from tests.security import images

pytestmark = pytest.mark.security


@pytest.fixture
def bounded(store: ReleaseStore, tmp_path: Path) -> Iterator[HostServer]:
    cfg = ServeConfig(
        releases=store.root,
        store_url=str(tmp_path / "h.sqlite"),
        port=free_port(),
        embedded_broker=True,
        embedded_broker_port=free_port(),
        http_limits=HttpLimits(max_connections=6, header_timeout_s=1.0, body_timeout_s=1.0),
    )
    srv = HostServer(cfg)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _connect(srv: HostServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.config.port), timeout=10)


def _answer(sock: socket.socket, seconds: float = 5.0) -> bytes:
    """What the server sends until it closes the connection; b'' if it keeps it open past ``seconds``."""
    sock.settimeout(seconds)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except TimeoutError:
        return b""
    return out


def test_a_slow_request_head_is_cut_off(bounded: HostServer) -> None:
    with _connect(bounded) as s:
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        assert _answer(s).startswith(b"HTTP/1.1 408")


def test_an_oversized_request_head_is_refused(bounded: HostServer) -> None:
    with _connect(bounded) as s:
        s.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for i in range(400):
                s.sendall(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000))
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert _answer(s).startswith(b"HTTP/1.1 431")


def test_connections_beyond_the_limit_get_a_503(bounded: HostServer) -> None:
    get = b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    with ExitStack() as idle:
        for _ in range(6):
            idle.enter_context(_connect(bounded))
        time.sleep(0.2)
        with _connect(bounded) as s:
            s.sendall(get)
            assert _answer(s).startswith(b"HTTP/1.1 503")
    time.sleep(0.2)
    with _connect(bounded) as s:
        s.sendall(get)
        assert _answer(s).startswith(b"HTTP/1.1 200")


def test_a_slow_upload_body_is_cut_off(bounded: HostServer) -> None:
    cid = str(uuid.uuid4())
    bounded.samples.create("lab", "dev-1", cid, n_images=1)
    png = images.encoded(".png", 32, 32)
    with _connect(bounded) as s:
        s.sendall(
            b"POST /api/v1/upload?command=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Edgeloop-Device: dev-1\r\n"
            b"X-Edgeloop-Fleet: lab\r\nContent-Length: %d\r\n\r\n" % (cid.encode(), len(png)) + png[:20]
        )
        answer = _answer(s)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert "arrive" in json.loads(answer.split(b"\r\n\r\n", 1)[1])["detail"]
    assert bounded.samples.files("lab", "dev-1", cid) == []


def test_a_slow_body_on_any_route_is_cut_off(bounded: HostServer) -> None:
    """The protocol's backstop: a JSON route reads its body with no timeout of its own."""
    with _connect(bounded) as s:
        s.sendall(
            b"POST /api/v1/rollouts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        t0 = time.monotonic()
        s.settimeout(10)
        assert s.recv(65536) == b""  # closed: body_timeout_s (1 s) and the linger (2 s)
        assert time.monotonic() - t0 < 5
