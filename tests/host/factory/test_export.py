from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch

from host.factory import checkpoint
from host.factory.export import export_command, export_verified
from host.factory.onnx_stats import onnx_params_macs
from host.factory.ort import ort_logits
from shared import datasets
from shared.errors import EdgeloopError
from shared.modelmeta import ModelMeta, read_meta
from tests.helpers import REPO


def test_export_is_verified_and_self_describing(tiny_ckpt: Path, tmp_path: Path, golden_dir: Path) -> None:
    out = tmp_path / "m.onnx"
    parity = export_command(tiny_ckpt, out)
    assert parity.max_abs_diff < 1e-4 and parity.top1_agreement == 1.0 and parity.n_images == 200
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    assert not [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    meta = read_meta(out)
    assert meta.classes == datasets.CIFAR10_CLASSES and meta.precision == "fp32"
    for batch in (1, 7):  # dynamic batch really works
        images = datasets.load_labelled(golden_dir, limit=batch).images
        assert ort_logits(out, images, meta.preprocessing).shape == (batch, 10)


def test_export_refuses_a_model_that_fails_parity(tiny_ckpt: Path, tmp_path: Path) -> None:
    ck = checkpoint.load(tiny_ckpt)
    model = ck.build()
    other = ck.build()
    with torch.no_grad():
        fc = other.fc
        assert isinstance(fc, torch.nn.Linear)
        fc.bias.add_(1.0 + torch.arange(10.0))  # a different model than the reference
    out = tmp_path / "bad.onnx"
    with pytest.raises(EdgeloopError, match="refusing to write"):
        export_verified(other, out, ModelMeta(ck.classes, ck.preprocessing), reference=model)
    assert not out.exists() and not list(tmp_path.glob("*.onnx"))


def test_onnx_params_and_macs_match_torch(tiny_ckpt: Path, tmp_path: Path) -> None:
    from host.factory.fold import fold_bn
    from host.factory.stats import count_macs, count_params

    out = tmp_path / "m.onnx"
    export_command(tiny_ckpt, out)
    params, macs = onnx_params_macs(onnx.load(str(out)))
    folded = fold_bn(checkpoint.load(tiny_ckpt).build())
    assert params == count_params(folded)
    assert macs == count_macs(folded)


def test_evaluate_json_contract(tiny_ckpt: Path, tmp_path: Path, golden_dir: Path) -> None:
    out = tmp_path / "m.onnx"
    export_command(tiny_ckpt, out)
    results = []
    for model in (tiny_ckpt, out):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "host.cli",
                "evaluate",
                str(model),
                "--data",
                str(golden_dir),
                "--json",
                "--iterations",
                "20",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        r = json.loads(done.stdout)
        for key in ("top1", "n_images", "params", "macs", "latency_ms", "throughput_ips"):
            assert key in r, key
        assert {"p50", "p99"} <= set(r["latency_ms"]) and r["n_images"] == 200 and 0 <= r["top1"] <= 1
        results.append(r)
    assert results[0]["top1"] == pytest.approx(results[1]["top1"], abs=0.01)  # .pt and its ONNX agree
    assert results[0]["macs"] == results[1]["macs"]


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "host.cli", "evaluate", str(tmp_path / "x.bin"), "--data", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "error:" in done.stderr and "Traceback" not in done.stderr


def test_meta_is_required_for_bare_onnx(tmp_path: Path) -> None:
    m = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    onnx.save(m, str(tmp_path / "bare.onnx"))
    with pytest.raises(EdgeloopError, match="no edgeloop metadata"):
        read_meta(tmp_path / "bare.onnx")
