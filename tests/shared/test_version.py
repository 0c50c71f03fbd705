"""`--version`: the installed distribution's version, else the source tree's own, which matches pyproject.toml."""

from __future__ import annotations

import argparse
from importlib import metadata

import pytest

from shared import version
from shared.compat import tomllib
from tests.helpers import REPO


def test_the_source_tree_version_is_pyprojects() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert (project["name"], version.__version__) == (version.DISTRIBUTION, project["version"])


def test_the_installed_version_is_read_from_the_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metadata, "version", lambda name: {"edgeloop": "9.8.7"}[name])
    assert version.version() == "9.8.7"


def test_without_the_distribution_the_source_tree_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert version.version() == version.__version__


def test_the_option_prints_prog_and_version_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="tool")
    version.add_version_option(parser)
    parser.add_argument("command")  # a required argument does not stop --version
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"tool {version.version()}\n"
