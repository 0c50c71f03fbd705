"""Hostile releases and commands against a live agent (real process, real Mosquitto, real HTTP).

Each is refused with its own EventReport code, and the running engine stays: a benchmark afterwards
still reports the good release. Commands are signed with the session key unless the case is about
the signature itself.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import onnx
import pytest

from host.fleet.release import ReleaseStore
from shared import protocol as p
from shared import signing
from shared.protocol import ReleaseManifest
from tests.e2e.conftest import StartAgent
from tests.fixtures import MakeRelease
from tests.helpers import Mosquitto, Recorder, signed

pytestmark = [pytest.mark.e2e, pytest.mark.security]

FAST = p.BenchSettings(warmup=2, iterations=20, throughput_batch=16, throughput_rounds=1, eval_limit=20)


def _codes(rec: Recorder) -> list[str]:
    return [r.code for r in map(p.decode_report, rec.topics("/report/event")) if isinstance(r, p.EventReport)]


def _wait_codes(rec: Recorder, wanted: set[str], timeout: float = 120) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = _codes(rec)
        if wanted <= set(codes):
            return codes
        time.sleep(0.2)
    raise TimeoutError(f"events {sorted(wanted - set(_codes(rec)))} never came; got {_codes(rec)}")


def _external_data_onnx(zoo_onnx: Path, dest: Path) -> bytes:
    """The zoo model with its weights moved to a side file: a graph that points outside itself."""
    model = onnx.load(str(zoo_onnx))
    onnx.save_model(
        model,
        str(dest),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return dest.read_bytes()


EXPECTED = {
    "signature_invalid",  # a release signed by a key the device does not trust
    "artifact_sha256_mismatch",  # an artifact whose bytes are not the signed digest
    "release_expired",  # past its signed not_after
    "release_older",  # a downgrade without an explicit rollback
    "command_signature_invalid",  # an unsigned rollback
    "duplicate_command",  # a replayed command
    "command_outside_skew_window",  # a command dated two hours ago
    "malformed_command",  # a path-traversal artifact name: not a valid manifest at all
    "onnx_rejected",  # an ONNX that keeps its weights in an external file
}


def test_hostile_releases_and_commands_are_refused_and_the_engine_stays(
    mosquitto: Mosquitto,
    start_agent: StartAgent,
    zoo_onnx: Path,
    make_release: MakeRelease,
    served: str,
    resign: Callable[[ReleaseManifest], ReleaseManifest],
    keys: tuple[Path, Path],
    store: ReleaseStore,
    tmp_path: Path,
) -> None:
    key = keys[0]
    agent = start_agent()
    rec = Recorder(mosquitto.port)
    rec.wait_online()
    topic = p.command_topic("lab", "dev-1")

    def deploy(m: ReleaseManifest) -> None:
        rec.publish(topic, signed(p.DeployCommand(device_id="dev-1", manifest=m, base_url=served, bench=FAST), key))

    good = make_release(zoo_onnx, "2.0.0")
    deploy(good)
    rec.wait_for("/report/benchmark", timeout=120)
    art = good.artifacts[0]
    other = tmp_path / "other"
    signing.generate_keypair(other / "k.key", other / "k.pub")
    deploy(signing.sign(good.model_copy(update={"version": "2.1.0"}), signing.load_private_key(other / "k.key")))
    bad_sha = art.model_copy(update={"sha256": "1" * 64})
    deploy(resign(good.model_copy(update={"version": "2.2.0", "artifacts": (bad_sha,)})))
    deploy(resign(good.model_copy(update={"version": "2.3.0", "not_after": p.utcnow() - timedelta(days=1)})))
    deploy(make_release(zoo_onnx, "1.9.0"))
    ext = _external_data_onnx(zoo_onnx, tmp_path / "ext.onnx")
    digest = hashlib.sha256(ext).hexdigest()
    (store.artifacts / f"{digest}.onnx").write_bytes(ext)
    ext_art = art.model_copy(update={"sha256": digest, "size": len(ext), "url": f"artifacts/{digest}.onnx"})
    deploy(resign(good.model_copy(update={"version": "2.5.0", "artifacts": (ext_art,)})))
    rec.publish(topic, p.encode(p.RollbackCommand(device_id="dev-1", target=good.ref)))  # unsigned
    replayed = signed(p.BenchmarkCommand(device_id="dev-1", bench=FAST), key)
    rec.publish(topic, replayed)
    rec.publish(topic, replayed)
    stale = p.BenchmarkCommand(device_id="dev-1", bench=FAST, sent_at=p.utcnow() - timedelta(hours=2))
    rec.publish(topic, signed(stale, key))
    doc = json.loads(signed(p.DeployCommand(device_id="dev-1", manifest=good, base_url=served), key))
    doc["manifest"]["artifacts"][0]["name"] = "../../etc/evil.onnx"
    rec.publish(topic, json.dumps(doc).encode())
    codes = _wait_codes(rec, EXPECTED)
    assert agent.alive, codes
    rec.publish(topic, signed(p.BenchmarkCommand(device_id="dev-1", bench=FAST), key))
    deadline = time.monotonic() + 120
    while (
        time.monotonic() < deadline and len({json.loads(x)["message_id"] for x in rec.topics("/report/benchmark")}) < 3
    ):
        time.sleep(0.2)
    # by message id: the replay was answered again with the report it had made (the same message), not run again
    benches = list({r.message_id: r for r in map(p.decode_report, rec.topics("/report/benchmark"))
                    if isinstance(r, p.BenchmarkReport)}.values())  # fmt: skip
    assert len(benches) == 3 and benches[-1].release == good.ref  # the good release still runs
    rec.close()
