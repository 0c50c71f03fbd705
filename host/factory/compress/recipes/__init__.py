"""The recipes edgeloop ships, one TOML file each (``edgeloop compress --recipe <name>``).

Kept apart from ``recipe`` (the validator, which needs every step and so torch): the CLI lists
these names in ``edgeloop compress --help``, and building the parser must not import torch.
"""

from __future__ import annotations

from pathlib import Path


def builtin_recipes() -> dict[str, Path]:
    d = Path(__file__).parent
    return {p.stem: p for p in sorted(d.glob("*.toml"))}
