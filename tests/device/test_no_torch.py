"""The device side must install and run without torch (a Jetson has only the device extra)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.helpers import REPO, agent_env

BLOCK_TORCH = textwrap.dedent(
    """
    import importlib.abc, sys
    class BlockTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch.") or name.startswith("torch_pruning"):
                raise ImportError(f"torch is blocked in this test ({name})")
            return None
    sys.meta_path.insert(0, BlockTorch())
    """
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)],
        cwd=REPO,
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_device_module_imports_without_torch() -> None:
    done = _run(
        """
        import importlib, pkgutil, sys
        import device, shared
        names = []
        for pkg in (device, shared):
            for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
                importlib.import_module(m.name)
                names.append(m.name)
        assert "torch" not in sys.modules, "torch was imported"
        print(len(names), "modules")
        """
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[0]) >= 15


def test_agent_starts_and_benches_without_torch(tmp_path: object, zoo_onnx: object) -> None:
    done = _run(
        f"""
        import sys, threading
        from device.agent import Agent
        from device.config import load_config
        from device.cli import bench_command
        from pathlib import Path
        cfg = load_config(None, device_id="no-torch", state_dir="{tmp_path}", require_signature=False,
                          broker={{"url": "mqtt://127.0.0.1:9"}}, status_interval_s=1)
        agent = Agent(cfg)
        stop = threading.Event()
        threading.Timer(1.0, stop.set).start()
        agent.run(stop)
        r = bench_command(Path("{zoo_onnx}"), None, 1, None, "auto", 2, 5, 8, None)
        assert r["runtime"] in ("openvino", "onnxruntime"), r  # auto: OpenVINO where installed
        rounds = r["raw_throughput_rounds"]
        assert len(rounds) == r["rounds"] == 3 and min(rounds) <= r["raw_throughput_ips"] <= max(rounds), r
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
