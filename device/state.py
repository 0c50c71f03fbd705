"""What the agent runs, persisted: the active release and the one before it (for rollback).

``active.json`` is replaced atomically (write + rename), so a crash at any point leaves either the
old or the new state, never a mix. Manifests of every release seen are kept for rollback.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import ValidationError

from shared.protocol import ReleaseManifest, ReleaseRef

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slot:
    name: str
    version: str
    artifact: str
    artifact_sha256: str
    precision: str
    engine: str  # engine cache digest

    @property
    def ref(self) -> ReleaseRef:
        return ReleaseRef(name=self.name, version=self.version)


class AgentState:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = state_dir / "active.json"
        self.releases = state_dir / "releases"
        self.artifacts = state_dir / "artifacts"
        for d in (self.dir, self.releases, self.artifacts):
            d.mkdir(parents=True, exist_ok=True)
        self.current: Slot | None = None
        self.previous: Slot | None = None
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        try:
            data = json.loads(self.path.read_text())
            self.current = Slot(**data["current"]) if data.get("current") else None
            self.previous = Slot(**data["previous"]) if data.get("previous") else None
        except (ValueError, TypeError, KeyError) as e:
            log.error("ignoring unreadable %s (%s); starting with no active release", self.path, e)

    def activate(self, slot: Slot) -> None:
        """Make ``slot`` current; the old current becomes previous (unless it is the same release)."""
        if self.current is not None and self.current.ref != slot.ref:
            self.previous = self.current
        self.current = slot
        self._save()

    def _save(self) -> None:
        data = {
            "current": asdict(self.current) if self.current else None,
            "previous": asdict(self.previous) if self.previous else None,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.path)

    def manifest_path(self, ref: ReleaseRef) -> Path:
        return self.releases / f"{ref.name}@{ref.version}.json"

    def store_manifest(self, manifest: ReleaseManifest) -> None:
        path = self.manifest_path(manifest.ref)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(manifest.model_dump_json(indent=2))
        os.replace(tmp, path)

    def store_base_url(self, ref: ReleaseRef, base_url: str | None) -> None:
        """Where a release's relative artifact URLs resolve (a later recalibrate fetches its FP32 there)."""
        if base_url:
            path = self.releases / f"{ref.name}@{ref.version}.base_url"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(base_url)
            os.replace(tmp, path)

    def base_url(self, ref: ReleaseRef) -> str | None:
        path = self.releases / f"{ref.name}@{ref.version}.base_url"
        try:
            return path.read_text().strip() or None
        except OSError:
            return None

    def load_manifest(self, ref: ReleaseRef) -> ReleaseManifest | None:
        path = self.manifest_path(ref)
        if not path.is_file():
            return None
        try:
            return ReleaseManifest.model_validate_json(path.read_text())
        except (ValidationError, OSError) as e:
            log.error("stored manifest %s is unreadable: %s", path, e)
            return None

    def artifact_path(self, sha256: str) -> Path:
        return self.artifacts / f"{sha256}.onnx"
