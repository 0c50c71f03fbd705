"""Fleet scale (slow): 500 simulated devices, a rollout, 100,000 telemetry reports, two ingest workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_500_devices_100k_reports(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    done = subprocess.run([sys.executable, "benchmarks/scale.py", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["rollout"]["state"] == "completed"
    assert r["telemetry_written"] == 100_000 and r["duplicates_dropped"] == 0
    assert all(n > 0 for n in r["per_worker_written"])
