"""deploy/compose.replicas.yaml (no Docker here): it parses, each replica's command is one that `edgeloop serve`
itself accepts, the replicas share what they must share (store, broker, public URL, releases volume) and differ
where they must (replica id), and the load balancer sends to each of them."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest

from host.cli import build_parser
from tests.helpers import REPO

DEPLOY = REPO / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")  # PyYAML comes with amqtt (the embedded broker)
    return dict(yaml.safe_load((DEPLOY / "compose.replicas.yaml").read_text()))


def _replicas(compose: dict[str, Any]) -> dict[str, Any]:
    """service name -> the parsed `edgeloop serve` arguments of each replica."""
    parser = build_parser()
    return {
        name: parser.parse_args(shlex.split(s["command"]))
        for name, s in compose["services"].items()
        if name.startswith("edgeloop-")
    }


def test_two_or_more_replicas_share_the_store_the_broker_and_the_public_url(compose: dict[str, Any]) -> None:
    replicas = _replicas(compose)
    assert len(replicas) >= 2
    assert sorted(a.replica_id for a in replicas.values()) == sorted(replicas)  # one id each: the service name
    for field in ("store", "broker", "public_url", "releases", "port", "broker_ca", "api_token_file"):
        assert len({getattr(a, field) for a in replicas.values()}) == 1, field
    first = next(iter(replicas.values()))
    assert first.store.startswith("postgresql://") and first.store.endswith("@postgres/edgeloop")
    assert first.broker == "mqtts://mosquitto:8884" and first.host == "0.0.0.0"


def test_every_replica_has_the_shared_volume_and_a_health_check(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "mosquitto", "lb"} <= set(services)
    for name in _replicas(compose):
        s = services[name]
        assert "releases:/data/releases" in s["volumes"], name
        assert set(s["depends_on"]) >= {"postgres", "mosquitto"}, name
        assert "/api/v1/health" in " ".join(s["healthcheck"]["test"]), name
        assert "pg_password" in s["secrets"] and "PGPASSWORD" in " ".join(s["entrypoint"]), name
    assert "releases" in compose["volumes"]


def test_the_load_balancer_sends_to_every_replica(compose: dict[str, Any]) -> None:
    conf = (DEPLOY / "nginx" / "edgeloop-lb.conf").read_text()
    upstream = set(re.findall(r"^\s*server\s+([\w-]+):8080", conf, re.MULTILINE))
    assert upstream == set(_replicas(compose))
    lb = compose["services"]["lb"]
    assert "./nginx/edgeloop-lb.conf:/etc/nginx/conf.d/default.conf:ro" in lb["volumes"]
    assert set(lb["depends_on"]) == set(_replicas(compose))
