from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from device.activation import ActivationError, EngineManager
from device.config import AgentConfig, load_config
from device.engine.builder import EngineCache
from device.state import AgentState
from host.fleet.release import ReleaseStore, create_release
from shared.protocol import ReleaseManifest
from tests.fixtures import MakeRelease


def _manager(state_dir: Path, pub: Path, **kw: object) -> EngineManager:
    cfg: AgentConfig = load_config(
        None, device_id="dev", state_dir=str(state_dir), trusted_keys=[str(pub)], runtime={"type": "onnxruntime"}, **kw
    )
    return EngineManager(cfg, AgentState(cfg.state_dir), EngineCache(cfg.state_dir / "engines"))


def _infer_ok(mgr: EngineManager) -> None:
    with mgr.active() as (rt, _, _):
        assert rt.infer(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)


def test_activate_then_already_active_then_restore(
    zoo_onnx: Path, make_release: MakeRelease, served: str, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    m = make_release(zoo_onnx)
    mgr = _manager(tmp_path / "state", keys[1])
    act = mgr.activate(m, served)
    assert not act.already_active and not act.cache_hit and act.selftest_top1 is not None
    assert mgr.state.current is not None and mgr.state.current.ref == m.ref
    again = mgr.activate(m, served)
    assert again.already_active
    _infer_ok(mgr)
    mgr.close()
    restarted = _manager(tmp_path / "state", keys[1])  # a rebooted device
    restarted.restore()
    _infer_ok(restarted)
    restarted.close()


def test_already_built_release_skips_the_build(
    zoo_onnx: Path, random_onnx: Path, make_release: MakeRelease, served: str, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    a = make_release(zoo_onnx, "1.0.0")
    b = make_release(zoo_onnx, "1.1.0")  # same file, new version: same engine
    mgr = _manager(tmp_path / "state", keys[1])
    assert mgr.activate(a, served).cache_hit is False
    second = mgr.activate(b, served)
    assert second.cache_hit is True and second.build_s == 0.0
    assert mgr.state.previous is not None and mgr.state.previous.ref == a.ref
    back = mgr.activate(a, served, rollback=True)
    assert back.cache_hit is True
    mgr.close()


def test_older_version_needs_an_explicit_rollback(
    zoo_onnx: Path, make_release: MakeRelease, served: str, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    old, new = make_release(zoo_onnx, "1.0.0"), make_release(zoo_onnx, "2.0.0")
    mgr = _manager(tmp_path / "state", keys[1])
    mgr.activate(new, served)
    with pytest.raises(ActivationError) as e:
        mgr.activate(old, served)
    assert e.value.code == "release_older"
    assert mgr.activate(old, served, rollback=True).slot.version == "1.0.0"
    mgr.close()


@pytest.mark.security
def test_unsigned_and_tampered_releases_are_refused(
    zoo_onnx: Path, make_release: MakeRelease, served: str, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    mgr = _manager(tmp_path / "state", keys[1])
    with pytest.raises(ActivationError) as e:
        mgr.activate(make_release(zoo_onnx, sign=False), served)
    assert e.value.code == "signature_invalid"
    good = make_release(zoo_onnx, "1.1.0")
    tampered = good.model_copy(update={"notes": "changed after signing"})
    with pytest.raises(ActivationError) as e:
        mgr.activate(tampered, served)
    assert e.value.code == "signature_invalid"
    assert mgr.state.current is None


@pytest.mark.security
@pytest.mark.parametrize("fault", ["sha256", "truncated", "corrupt", "selftest"])
def test_failed_activation_keeps_the_running_engine(
    fault: str,
    zoo_onnx: Path,
    random_onnx: Path,
    make_release: MakeRelease,
    served: str,
    store: ReleaseStore,
    keys: tuple[Path, Path],
    resign: Callable[[ReleaseManifest], ReleaseManifest],
    tmp_path: Path,
) -> None:
    mgr = _manager(tmp_path / "state", keys[1])
    good = make_release(zoo_onnx, "1.0.0")
    mgr.activate(good, served)
    if fault == "selftest":  # an engine far worse on the golden images than the release says it is
        rnd = make_release(random_onnx, "1.1.0")
        art = rnd.artifacts[0].model_copy(update={"golden_top1": 0.9})
        bad = resign(rnd.model_copy(update={"artifacts": (art,)}))
        expected = "selftest_failed"
    else:
        art = good.artifacts[0]
        if fault == "sha256":
            art = art.model_copy(update={"sha256": "0" * 64})
            expected = "artifact_sha256_mismatch"
        elif fault == "truncated":
            art = art.model_copy(update={"size": art.size + 100})
            expected = "artifact_truncated"
        else:
            data = b"\x08\x07garbage" * 1000
            digest = hashlib.sha256(data).hexdigest()
            (store.artifacts / f"{digest}.onnx").write_bytes(data)
            art = art.model_copy(update={"sha256": digest, "size": len(data), "url": f"artifacts/{digest}.onnx"})
            expected = "onnx_rejected"  # refused by the ONNX checks before any build
        bad = resign(good.model_copy(update={"version": "1.1.0", "artifacts": (art,)}))
    with pytest.raises(ActivationError) as e:
        mgr.activate(bad, served)
    assert e.value.code == expected
    assert mgr.state.current is not None and mgr.state.current.ref == good.ref
    _infer_ok(mgr)
    mgr.close()


def _two_precisions(zoo_onnx: Path, store: ReleaseStore, keys: tuple[Path, Path], tmp_path: Path) -> ReleaseManifest:
    build = tmp_path / "build-two"
    build.mkdir()
    for name in ("resnet20.onnx", "resnet20-int8.onnx"):
        shutil.copy(zoo_onnx.parent / name, build / name)
    return create_release(build, "two", "1.0.0", store, sign_key=keys[0], source_top1=0.9)


def test_the_selection_times_each_precision_and_runs_the_fastest(
    zoo_onnx: Path, store: ReleaseStore, served: str, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    m = _two_precisions(zoo_onnx, store, keys, tmp_path)
    mgr = _manager(tmp_path / "state", keys[1], selection={"seconds": 0.3, "batch": 32})
    act = mgr.activate(m, served)
    mgr.close()
    timed = {c.precision: c for c in act.candidates if c.throughput_ips}
    assert set(timed) == {"int8", "fp32"}, act.candidates
    fastest = max(timed.values(), key=lambda c: c.throughput_ips or 0.0)
    assert fastest.chosen and act.slot.precision == fastest.precision
    assert [c.chosen for c in act.candidates].count(True) == 1
    assert timed["int8"].verified is True  # the gate ran on the INT8 candidate
    assert act.selection_s is not None and act.selection_s > 0


def test_a_pinned_precision_is_not_measured_against_others(
    zoo_onnx: Path, store: ReleaseStore, served: str, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    m = _two_precisions(zoo_onnx, store, keys, tmp_path)
    mgr = _manager(tmp_path / "state", keys[1], selection={"precision": "fp32"})
    act = mgr.activate(m, served)
    mgr.close()
    assert act.slot.precision == "fp32"
    assert [(c.precision, c.throughput_ips, c.chosen) for c in act.candidates] == [("fp32", None, True)]
