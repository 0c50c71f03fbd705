"""What the web app needs from the host process, as a Protocol: ``HostServer`` provides it.

The web side names only what it uses (the API's credentials, the store, the release files, the controller,
ingest counters, the field samples, recalibrations, broker health, publishing a command), so it never imports
the server that mounts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from host.fleet.ingest import IngestStats
from host.fleet.recalibration import Recalibrations
from host.fleet.release import ReleaseStore
from host.fleet.rollout import RolloutController
from host.fleet.samples import FieldSamples
from host.fleet.signer import CommandSigner
from host.fleet.store import Store
from host.fleet.web.auth import ApiAuth
from shared.httpserver import HttpLimits


class IngestWorker(Protocol):
    @property
    def stats(self) -> IngestStats: ...


class FleetHost(Protocol):
    @property
    def auth(self) -> ApiAuth:
        """Who may call the API (``host.fleet.web.auth``)."""
        ...

    @property
    def store(self) -> Store: ...

    @property
    def release_store(self) -> ReleaseStore: ...

    @property
    def controller(self) -> RolloutController: ...

    @property
    def ingests(self) -> Sequence[IngestWorker]: ...

    @property
    def uploads(self) -> Path: ...

    @property
    def samples(self) -> FieldSamples: ...

    @property
    def signer(self) -> CommandSigner: ...

    @property
    def recalibrations(self) -> Recalibrations:
        """Sends recalibrate commands and promotes kept calibrations."""
        ...

    @property
    def base_url(self) -> str:
        """The URL devices reach this server at (ends with '/')."""
        ...

    @property
    def http_limits(self) -> HttpLimits:
        """Connection and request bounds of the HTTP server (the upload route's body timeout)."""
        ...

    def broker_connected(self) -> bool: ...

    def replica_status(self) -> dict[str, object]:
        """This replica: its id, whether it holds the controller lease, its ingest slots."""
        ...

    def publish(self, topic: str, payload: bytes) -> bool:
        """Publish with QoS 1; True once the broker has it."""
        ...

    def sync_releases(self) -> int:
        """Copy the release files' manifests into the store; returns how many there are."""
        ...
