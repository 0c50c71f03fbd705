"""deploy/compose.yaml (no Docker here): the one-host deployment's `edgeloop serve` command is one the CLI accepts,
and it can log in to the PostgreSQL the file starts (the password from the same secret)."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from host.cli import build_parser
from tests.helpers import REPO


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")  # PyYAML comes with amqtt (the embedded broker)
    return dict(yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text()))


def test_serve_reaches_the_postgres_of_the_file_with_its_password(compose: dict[str, Any]) -> None:
    services = compose["services"]
    serve = services["edgeloop"]
    args = build_parser().parse_args(shlex.split(serve["command"]))
    assert args.store == "postgresql://edgeloop@postgres/edgeloop" and args.host == "0.0.0.0"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/pg_password"
    assert "pg_password" in serve["secrets"] and "pg_password" in services["postgres"]["secrets"]
    shell = serve["entrypoint"]
    assert shell[:2] == ["sh", "-c"] and 'PGPASSWORD="$$(cat /run/secrets/pg_password)"' in shell[2]
    assert 'exec edgeloop "$$@"' in shell[2] and set(serve["depends_on"]) >= {"postgres", "mosquitto"}
