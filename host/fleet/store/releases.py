"""Releases the host knows: the signed manifests, as ``ReleaseManifest`` wire models."""

from __future__ import annotations

import sqlalchemy as sa

from host.fleet.store.base import StoreBase
from host.fleet.store.schema import releases
from shared.protocol import ReleaseManifest


class ReleaseQueries(StoreBase):
    def add_release(self, manifest: ReleaseManifest) -> None:
        stmt = (
            self._insert(releases)
            .values(
                name=manifest.name,
                version=manifest.version,
                manifest=manifest.model_dump_json(),
                created_at=manifest.created_at,
            )
            .on_conflict_do_nothing()
        )
        self._write(stmt)

    def release(self, name: str, version: str) -> ReleaseManifest | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(releases.c.manifest).where(releases.c.name == name, releases.c.version == version)
            ).first()
        return ReleaseManifest.model_validate_json(row[0]) if row else None

    def releases(self) -> list[ReleaseManifest]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(releases.c.manifest).order_by(releases.c.created_at)).all()
        return [ReleaseManifest.model_validate_json(r[0]) for r in rows]
