from __future__ import annotations

from pathlib import Path

import pytest

from device.config import load_config
from device.engine.runtimes.onnxruntime import OnnxRuntimeConfig
from device.engine.runtimes.registry import AutoConfig
from device.engine.runtimes.tensorrt import TensorRTConfig
from shared.errors import EdgeloopError
from tests.device.fakes import FakeConfig, FakeRuntime
from tests.helpers import REPO


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(text)
    return p


def test_toml_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_file = _write(
        tmp_path,
        f"""
device_id = "jetson-01"
fleet = "lab"
state_dir = "{tmp_path}/state"
require_signature = false
[broker]
url = "mqtts://broker.local:8883"
username = "dev"
[runtime]
type = "onnxruntime"
threads = 2
""",
    )
    monkeypatch.setenv("EDGELOOP_FLEET", "prod")
    monkeypatch.setenv("EDGELOOP_BROKER__PASSWORD", "s3cret")
    cfg = load_config(cfg_file)
    assert cfg.device_id == "jetson-01" and cfg.fleet == "prod"  # environment wins
    assert isinstance(cfg.runtime, OnnxRuntimeConfig) and cfg.runtime.threads == 2
    s = cfg.broker.settings()
    assert (s.host, s.port, s.tls, s.password) == ("broker.local", 8883, True, "s3cret")
    assert "s3cret" not in cfg.model_dump_json()


def test_defaults_to_auto_runtime(tmp_path: Path) -> None:
    cfg = load_config(None, device_id="d", state_dir=str(tmp_path), require_signature=False)
    assert isinstance(cfg.runtime, AutoConfig)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('device_id = "bad/id"\nrequire_signature = false', "device_id"),
        ('device_id = "d"\nrequire_signature = false\n[broker]\nurl = "http://x"', "broker.url"),
        ('device_id = "d"\nrequire_signature = false\n[runtime]\ntype = "nosuch"', "runtime"),
        ('device_id = "d"\nrequire_signature = false\nbogus = 1', "bogus"),
        ('device_id = "d"', "require_signature"),
        ("require_signature = false", "device_id"),
        ('device_id = "d"\nrequire_signature = false\neval_dir = "/nonexistent"', "eval_dir"),
    ],
)
def test_bad_config_fails_fast_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(EdgeloopError) as e:
        load_config(_write(tmp_path, text))
    assert field.split(".", maxsplit=1)[0] in str(e.value)


def test_missing_and_unparsable_files(tmp_path: Path) -> None:
    with pytest.raises(EdgeloopError, match="not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(EdgeloopError):
        load_config(_write(tmp_path, "device_id = [unclosed"))


def test_auto_keeps_its_per_backend_tables(tmp_path: Path) -> None:
    text = '[runtime]\ntype = "auto"\n[runtime.tensorrt]\nworkspace_mb = 256\nsparse_weights = true\n'
    cfg = load_config(_write(tmp_path, f'device_id = "d"\nrequire_signature = false\n{text}'))
    assert isinstance(cfg.runtime, AutoConfig)
    assert cfg.runtime.backend("tensorrt") == TensorRTConfig(workspace_mb=256, sparse_weights=True)
    assert cfg.runtime.backend("onnxruntime") == OnnxRuntimeConfig()
    with pytest.raises(EdgeloopError, match=r"runtime\.tensorrt\.workspace_mb"):
        load_config(
            None, device_id="d", require_signature=False, runtime={"type": "auto", "tensorrt": {"workspace_mb": 1}}
        )


def test_unknown_runtime_type_is_a_clear_error(tmp_path: Path) -> None:
    text = 'device_id = "d"\nrequire_signature = false\n[runtime]\ntype = "nosuch"\n'
    with pytest.raises(EdgeloopError) as e:
        load_config(_write(tmp_path, text))
    assert "runtime: " in str(e.value)
    assert "unknown runtime type 'nosuch'; known types: auto, onnxruntime, openvino, tensorrt" in str(e.value)
    with pytest.raises(EdgeloopError, match="unknown runtime 'nosuch' under auto"):
        load_config(None, device_id="d", require_signature=False, runtime={"type": "auto", "nosuch": {}})


def test_a_registered_backend_is_a_valid_runtime_table(fake_runtime: type[FakeRuntime]) -> None:
    cfg = load_config(None, device_id="d", require_signature=False, runtime={"type": "fake", "classes": 3})
    assert cfg.runtime == FakeConfig(classes=3)
    with pytest.raises(EdgeloopError, match=r"runtime\.bogus: Extra inputs are not permitted"):
        load_config(None, device_id="d", require_signature=False, runtime={"type": "fake", "bogus": 1})


def test_the_example_config_in_deploy_is_valid(tmp_path: Path) -> None:
    """deploy/agent.toml, with its /etc and /var paths moved under tmp_path (the files made empty)."""
    text = (REPO / "deploy" / "agent.toml").read_text()
    for prefix in ("/etc/edgeloop", "/var/lib/edgeloop"):
        text = text.replace(prefix, f"{tmp_path}{prefix}")
    for line in text.splitlines():
        for part in line.split('"')[1::2]:
            if part.startswith(str(tmp_path)):
                p = Path(part)
                if p.suffix:
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.touch()
                else:
                    p.mkdir(parents=True, exist_ok=True)
    cfg = load_config(_write(tmp_path, text))
    assert cfg.selection.measure and cfg.selection.batch == 64 and cfg.int8.verify
    assert cfg.inference is not None and cfg.inference.reservoir is not None and cfg.inference.drift.threshold == 1.0


def test_a_selection_pin_must_fit_the_runtime(tmp_path: Path) -> None:
    base = f'device_id = "d"\nstate_dir = "{tmp_path}/s"\nrequire_signature = false\n'
    with pytest.raises(EdgeloopError, match=r"selection\.runtime pins 'tensorrt'"):
        load_config(_write(tmp_path, base + '[runtime]\ntype = "onnxruntime"\n[selection]\nruntime = "tensorrt"\n'))
    with pytest.raises(EdgeloopError, match="unknown runtime 'nope'"):
        load_config(_write(tmp_path, base + '[selection]\nruntime = "nope"\n'))
    cfg = load_config(_write(tmp_path, base + '[selection]\nruntime = "onnxruntime"\nprecision = "fp32"\n'))
    assert (cfg.selection.runtime, cfg.selection.precision) == ("onnxruntime", "fp32")
