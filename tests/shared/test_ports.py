"""free_loopback_port never hands the same port out twice (the demo's HTTP server and broker once got one)."""

from __future__ import annotations

import socket

from shared.ports import free_loopback_port


def test_ports_are_free_and_never_handed_out_twice() -> None:
    ports = [free_loopback_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as s:  # and each was free: one can be bound
        s.bind(("127.0.0.1", ports[-1]))
