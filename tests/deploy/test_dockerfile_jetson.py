"""deploy/Dockerfile.jetson, read as Docker reads it (no Docker engine runs on the CI machines): the order
of its instructions is what makes it fail early, install the right extra and run unprivileged."""

from __future__ import annotations

import re

from shared.compat import tomllib
from tests.helpers import REPO

DOCKERFILE = REPO / "deploy" / "Dockerfile.jetson"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())  # join continuation lines
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


def test_tensorrt_is_checked_right_after_from() -> None:
    ins = _instructions()
    first = next(i for i, (op, _) in enumerate(ins) if op == "FROM")
    after = [(op, arg) for op, arg in ins[first + 1 :] if op != "ARG"]
    assert after[0][0] == "RUN" and "import tensorrt" in after[0][1]


def test_the_jetson_extra_is_installed_in_a_venv_that_sees_jetpacks_tensorrt() -> None:
    ins = _instructions()
    args = {arg.split("=", 1)[0]: arg.split("=", 1)[1] for op, arg in ins if op == "ARG" and "=" in arg}
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert args["EXTRA"] == "jetson" and {"jetson", "jetson7"} <= set(extras)
    runs = " ".join(arg for op, arg in ins if op == "RUN")
    assert "venv --system-site-packages" in runs and '"/src[${EXTRA}]"' in runs


def test_it_runs_as_a_non_root_user() -> None:
    ins = _instructions()
    users = [arg for op, arg in ins if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    last_user = max(i for i, (op, _) in enumerate(ins) if op == "USER")
    assert all(op != "RUN" for op, _ in ins[last_user:])  # nothing runs as root after it, and nothing needs to
