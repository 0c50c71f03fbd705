"""The store of the store tests, on SQLite and on PostgreSQL (``EDGELOOP_TEST_POSTGRES_URL``; required in CI)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from host.fleet.store import Store, metadata

PG_ENV = "EDGELOOP_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", "postgresql"]


def schema_reset(url: str) -> None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        metadata.drop_all(conn)
        conn.execute(sa.text("DROP TABLE IF EXISTS schema_version"))
    engine.dispose()


@contextmanager
def open_store(backend: str, tmp_path: Path) -> Iterator[Store]:
    """A new, empty store on ``backend``; skipped (failed under CI) where PostgreSQL is not configured."""
    if backend == "sqlite":
        s = Store(str(tmp_path / "t.sqlite"))
    else:
        url = os.environ.get(PG_ENV)
        if not url:
            if os.environ.get("CI"):
                pytest.fail(f"{PG_ENV} must be set in CI (.ci/run starts PostgreSQL)")
            pytest.skip(f"set {PG_ENV}=postgresql://user:pw@127.0.0.1/db to run against PostgreSQL")
        schema_reset(url)
        s = Store(url)
    try:
        yield s
    finally:
        s.close()
