"""Results people compare are printed as tables (rich) and written as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], console: Console | None = None
) -> None:
    table = Table(title=title, title_justify="left")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[fmt(v) for v in row])
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped or logged: don't squeeze the table into 80 columns
            console = Console(width=220)
    console.print(table)


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.3g}" if abs(v) < 0.01 and v != 0 else f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
