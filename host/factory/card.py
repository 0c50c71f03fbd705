"""JSON model cards: what a checkpoint is, how it was made and how well it does."""

from __future__ import annotations

import json
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def invocation() -> str:
    """The exact command line that is running, as a user would type it."""
    prog = Path(sys.argv[0]).name
    if prog in {"__main__.py", "cli.py"}:
        prog = "edgeloop"
    return shlex.join([prog, *sys.argv[1:]])


def card_path(checkpoint: str | Path) -> Path:
    return Path(checkpoint).with_suffix(".json")


def write_card(path: str | Path, card: dict[str, Any]) -> Path:
    import torch  # host-only; imported here so this module stays cheap

    path = Path(path)
    body = {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        **card,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def read_card(path: str | Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data
