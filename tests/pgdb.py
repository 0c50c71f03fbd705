"""A PostgreSQL database of a test's own (``EDGELOOP_TEST_POSTGRES_URL``'s server), created and dropped
around it: other tests reset the shared database's schema while they run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

PG_ENV = "EDGELOOP_TEST_POSTGRES_URL"


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")


@contextmanager
def private_postgres(prefix: str = "edgeloop_t") -> Iterator[str]:
    """The URL of a new, empty database; skipped (failed under CI) where PostgreSQL is not configured."""
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} must be set in CI (.ci/run starts PostgreSQL)")
        pytest.skip(f"set {PG_ENV}=postgresql://user:pw@127.0.0.1/db to run against PostgreSQL")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = _engine(url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
