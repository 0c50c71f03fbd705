"""The docs stay true: every repo path and every `edgeloop` / `edgeloop-agent` command that README.md and
docs/*.md name exists, every relative link resolves, and the README stays short enough to read.

What counts as a repo path (in inline code, not in fenced examples, whose paths are often outputs):

* a path whose first part is a top-level entry of the repo (`host/zoo/resnet20.onnx`, `deploy/`,
  `./scripts/test.sh`, `host/zoo/*.json` as a glob);
* a bare file name of source or docs (`trt_fakes.py`, `agent.toml`): it must exist somewhere in the repo;
* in a layout table, a row whose first cell is a folder in backticks: every file or folder the row names
  must exist under that folder, so `quantize.py` in the `host/factory/compress/` row is stale once it moved
  to `device/engine/calibration/`.

Commands are read everywhere, fenced blocks included: the word after the program must be one of its
sub-commands, and the word after that one of the sub-command's own, where it has some.

Docstrings and comments of the code that name a .md file (and a section of it) must name one that exists.
"""

from __future__ import annotations

import argparse
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import REPO

MAX_README_BYTES = 12 * 1024
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# the top level of the repo as git holds it (build/, .venv/ and caches are local, never named as the repo's)
TOP_FOLDERS = ("shared", "host", "device", "tests", "deploy", "benchmarks", "scripts", "docs", ".ci")
ROOTS = frozenset((*TOP_FOLDERS, "README.md", "pyproject.toml"))
# a bare name with one of these suffixes is a file of the repo (other bare names, `model.onnx`, are examples)
BARE_SUFFIXES = (".py", ".md", ".sh", ".toml")
# in a layout row, a name with one of these suffixes (or ending in /) is a file (or folder) of that folder
FILE_SUFFIXES = (*BARE_SUFFIXES, ".json", ".jsonl", ".png", ".onnx", ".pt", ".yaml", ".yml", ".conf", ".service")
PATHLIKE = re.compile(r"[\w.*/-]+")
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
COMMAND = re.compile(r"(?:^|(?<=[\s`(/]))(edgeloop-agent|edgeloop)[ \t]+([a-z][a-z0-9-]*)(?:[ \t]+([a-z][a-z0-9-]*))?")
# "docs/design.md, "Wire contract"" in a docstring or comment: the file, and the section when one is named
CODE_REFERENCE = re.compile(r'([\w./-]+\.md)\b(?:,\s*"([^"]+)")?')
IGNORED_DIRS = frozenset({"__pycache__", ".venv", "build", ".git", ".mypy_cache", ".ruff_cache", ".pytest_cache"})


@dataclass(frozen=True)
class Finding:
    doc: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.what}"


@functools.cache
def _repo_files(repo: Path) -> list[Path]:
    out: list[Path] = []
    for root in sorted(ROOTS):
        top = repo / root
        if top.is_file():
            out.append(top)
        elif top.is_dir():
            out += [p for p in top.rglob("*") if not IGNORED_DIRS.intersection(p.relative_to(repo).parts)]
    return out


def _exists(repo: Path, rel: str) -> bool:
    rel = rel.removeprefix("./")
    if "*" in rel:
        return any(repo.glob(rel.rstrip("/")))
    path = repo / rel
    return path.is_dir() if rel.endswith("/") else path.exists()


def _under(folder: Path, name: str, files: list[Path]) -> bool:
    """``name`` (``config.py``, ``tensorrt/``, ``steps/base.py``, ``*-result.json``) is somewhere under ``folder``."""
    bare = name.rstrip("/")
    if "*" in bare:
        return any(folder.rglob(bare))
    want = Path(bare).parts
    return any(
        p.parts[-len(want) :] == want and folder in p.parents and (p.is_dir() or not name.endswith("/")) for p in files
    )


def _lines(text: str) -> Iterator[tuple[int, str, bool]]:
    """(line number, line, inside a fenced block) for every line of ``text``."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            yield n, line, True
        else:
            yield n, line, fenced


def _row_folder(line: str) -> str | None:
    """The folder a layout-table row is about: its first cell, when that is one backticked folder path."""
    m = re.match(r"\|\s*`([^`]+/)`\s*\|", line)
    return m.group(1) if m and m.group(1).split("/")[0] in ROOTS else None


def _check_span(repo: Path, span: str, folder: str | None, files: list[Path]) -> str | None:
    """Why ``span`` is a stale path, or None (fine, or not a path)."""
    span = span.strip()
    if not PATHLIKE.fullmatch(span):
        return None
    first = span.removeprefix("./").split("/")[0]
    if "/" in span and first in ROOTS:
        return None if _exists(repo, span) else f"no such path: {span}"
    if folder is not None and (span.endswith("/") or span.endswith(FILE_SUFFIXES)):
        return None if _under(repo / folder, span, files) else f"nothing named {span} under {folder}"
    if "/" not in span and span.endswith(BARE_SUFFIXES):
        return None if any(p.name == span for p in files) else f"no file named {span} in the repo"
    return None


def path_findings(repo: Path, doc: Path, text: str) -> list[Finding]:
    files = _repo_files(repo)
    name = str(doc.relative_to(repo)) if doc.is_relative_to(repo) else doc.name
    found = []
    for n, line, fenced in _lines(text):
        if fenced:
            continue
        folder = _row_folder(line)
        for span in INLINE.findall(line):
            why = _check_span(repo, span, folder, files)
            if why:
                found.append(Finding(name, n, why))
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (doc.parent / target.split("#")[0]).exists():
                found.append(Finding(name, n, f"broken link: {target}"))
    return found


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from device.cli import build_parser as agent_parser
    from host.cli import build_parser as host_parser

    return {"edgeloop": host_parser(), "edgeloop-agent": agent_parser()}


def command_findings(doc_name: str, text: str, parsers: dict[str, argparse.ArgumentParser]) -> list[Finding]:
    found = []
    for n, line, fenced in _lines(text):
        spans = [line] if fenced else INLINE.findall(line)
        for span in spans:
            for program, first, second in COMMAND.findall(span):
                commands = _subcommands(parsers[program])
                if first not in commands:
                    found.append(Finding(doc_name, n, f"`{program} {first}`: no such command"))
                    continue
                nested = _subcommands(commands[first])
                if nested and second and second not in nested:
                    found.append(Finding(doc_name, n, f"`{program} {first} {second}`: no such command"))
    return found


def code_reference_findings(repo: Path, source: Path) -> list[Finding]:
    """The .md files (and their sections) that a source file's docstrings and comments point at, where missing."""
    where = str(source.relative_to(repo)) if source.is_relative_to(repo) else source.name
    found = []
    for n, line in enumerate(source.read_text().splitlines(), 1):
        for name, section in CODE_REFERENCE.findall(line):
            target = next((p for p in (repo / name, source.parent / name) if p.is_file()), None)
            if target is None:
                found.append(Finding(where, n, f"no such file: {name}"))
            elif section and not re.search(rf"^(#+ |\* \*\*|\*\*){re.escape(section)}", target.read_text(), re.M):
                found.append(Finding(where, n, f"{name} has no section {section!r}"))
    return found


@pytest.fixture(scope="module")
def parsers() -> dict[str, argparse.ArgumentParser]:
    return _parsers()


def test_the_readme_links_every_page_of_docs() -> None:
    linked = set(LINK.findall((REPO / "README.md").read_text()))
    pages = {f"docs/{d.name}" for d in DOCS[1:]}
    assert {"docs/workflow.md", "docs/design.md", "docs/results.md", "docs/testing.md", "docs/jetson.md"} <= pages
    assert pages <= linked, f"README.md does not link {sorted(pages - linked)}"


def test_readme_fits_on_a_screen_or_two() -> None:
    size = (REPO / "README.md").stat().st_size
    assert size <= MAX_README_BYTES, f"README.md is {size:,} bytes (at most {MAX_README_BYTES:,}): move detail to docs/"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_path_named_exists(doc: Path) -> None:
    found = path_findings(REPO, doc, doc.read_text())
    assert not found, "stale paths:\n" + "\n".join(map(str, found))


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_command_named_exists(doc: Path, parsers: dict[str, argparse.ArgumentParser]) -> None:
    found = command_findings(doc.name, doc.read_text(), parsers)
    assert not found, "commands the CLIs do not have:\n" + "\n".join(map(str, found))


def test_code_points_only_at_docs_that_exist() -> None:
    sources = [
        p
        for top in ("shared", "host", "device", "tests", "benchmarks")
        for p in sorted((REPO / top).rglob("*"))
        if p.suffix in (".py", ".toml") and p != Path(__file__).resolve() and "__pycache__" not in p.parts
    ]
    found = [f for p in sources for f in code_reference_findings(REPO, p)]
    assert not found, "docstrings and comments that point at nothing:\n" + "\n".join(map(str, found))


def test_the_checks_see_what_is_stale(parsers: dict[str, argparse.ArgumentParser], tmp_path: Path) -> None:
    """Each kind of stale reference is caught, and what is true passes."""
    doc = REPO / "docs" / "probe.md"
    text = "\n".join(
        [
            "`host/zoo/resnet20.onnx` `host/zoo/*.json` `./scripts/test.sh` `trt_fakes.py` [jetson](jetson.md)",
            "`host/rollout.py` `shared/protocol.py` `no_such_module.py` [gone](gone.md) `STATE_DIR/engines`",
            "| `host/factory/compress/` | `steps/` (`base.py`), `quantize.py`, `prune.py` |",
            "```bash",
            "edgeloop rollout start x --fleet f; .venv/bin/edgeloop-agent bench m.onnx",
            "edgeloop deploy x; edgeloop rollout pause 1; edgeloop-agent fetch y",
            "```",
        ]
    )
    paths = {(f.line, f.what) for f in path_findings(REPO, doc, text)}
    assert paths == {
        (2, "no such path: host/rollout.py"),
        (2, "no such path: shared/protocol.py"),
        (2, "no file named no_such_module.py in the repo"),
        (2, "broken link: gone.md"),
        (3, "nothing named quantize.py under host/factory/compress/"),
    }
    code = tmp_path / "probe.py"
    code.write_text('"""See DESIGN.md, docs/design.md, "Wire contract" and docs/design.md, "Nowhere"."""\n')
    assert [f.what for f in code_reference_findings(REPO, code)] == [
        "no such file: DESIGN.md",
        "docs/design.md has no section 'Nowhere'",
    ]
    commands = [f.what for f in command_findings("probe.md", text, parsers)]
    assert commands == [
        "`edgeloop deploy`: no such command",
        "`edgeloop rollout pause`: no such command",
        "`edgeloop-agent fetch`: no such command",
    ]
