"""The edgeloop version that `edgeloop --version` and `edgeloop-agent --version` print.

Both sides are one distribution, ``edgeloop``: the version is its installed metadata, and the source
tree's own ``__version__`` where the distribution is not installed (a checkout on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

DISTRIBUTION = "edgeloop"
# the [project] version of pyproject.toml; tests/shared/test_version.py keeps the two equal
__version__ = "0.1.0"


def version() -> str:
    """The installed distribution's version, else this source tree's."""
    from importlib import metadata  # only when asked: `--help` does not pay for the metadata scan

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return __version__


class _VersionAction(argparse.Action):
    """argparse's own ``version`` action wants the text when the parser is built; this one looks it up when used."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        print(f"{parser.prog} {version()}", file=sys.stdout)
        parser.exit()


def add_version_option(parser: argparse.ArgumentParser) -> None:
    """``--version``: print ``PROG VERSION`` and exit 0."""
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
