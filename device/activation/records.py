"""What an activation is and how it fails: ``ActivationError`` (its ``code`` goes into the EventReport),
the ``Activation`` record the deploy handler reports, and the model input of a manifest."""

from __future__ import annotations

from dataclasses import dataclass, field

from device.engine.runtimes.base import Engine
from device.state import Slot
from shared.errors import EdgeloopError
from shared.imaging import Preprocessing
from shared.protocol import EngineCandidate, ReleaseManifest, ReleaseRef


class ActivationError(EdgeloopError):
    """An activation that was refused or failed; ``code`` names the reason in the EventReport."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Activation:
    slot: Slot
    engine: Engine
    runtime_name: str
    runtime_version: str
    accelerator: str
    cache_hit: bool
    fetch_s: float
    build_s: float
    selftest_top1: float | None
    previous: ReleaseRef | None
    already_active: bool = False
    candidates: list[EngineCandidate] = field(default_factory=list)  # what was tried, with its figures
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (level, code, message) to report
    selection_s: float | None = None  # what choosing between the candidates cost


def prep_of(manifest: ReleaseManifest) -> Preprocessing:
    p = manifest.model.preprocessing
    return Preprocessing(mean=p.mean, std=p.std, size=p.size)
