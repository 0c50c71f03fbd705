"""`edgeloop-agent --version`, and `--json` on the commands that print JSON anyway (the flag is accepted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device.cli import main
from shared.version import version


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"edgeloop-agent {version()}\n"


def test_sysinfo_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sysinfo", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out, dict) and "cpu_percent" in out


def test_check_config_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'device_id = "d"\nrequire_signature = false\nstate_dir = "{tmp_path}"\n')
    assert main(["check-config", "--config", str(cfg), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device_id"] == "d" and "password" not in out["broker"]
