"""Tables that fit the terminal: at a given width each table shows the columns that fit, most
important first, and says which it left out (`--json` has them all). Names and number
formats are never cut: their columns fold a too-long value onto the next line rather than
end it in '…', and every other column goes first.

A column is `Col(header, right=False, rank=...)`; rank None means always shown (a layer
name, a precision); among the rest the lowest rank is left out first (default: later columns
before earlier ones)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rich.table import Table


@dataclass(frozen=True)
class Col:
    header: str
    right: bool = False          # numbers: right-aligned
    rank: int | None = 0         # None: always shown; else lower ranks are left out first


def _natural(col: Col, cells: Sequence[str]) -> int:
    lines = [len(line) for c in cells for line in str(c).splitlines()] or [0]
    return max([len(col.header)] + lines)


def fit_table(title: str | None, cols: Sequence[Col], rows: Sequence[Sequence[str]], width: int,
              footer: Sequence[Sequence[str]] = ()) -> tuple[Table, list[str]]:
    """The rich Table of `rows` at `width` columns, and the headers left out to fit."""
    all_rows = list(rows) + list(footer)
    natural = [_natural(c, [r[i] for r in all_rows]) for i, c in enumerate(cols)]
    shown = list(range(len(cols)))
    # rich's box: one border, then per column a space, the cell, a space and a border
    total = lambda idx: 1 + sum(natural[i] + 3 for i in idx)  # noqa: E731
    order = sorted((i for i, c in enumerate(cols) if c.rank is not None),
                   key=lambda i: (cols[i].rank, -i))
    dropped = []
    for i in order:
        if total(shown) <= width:
            break
        shown.remove(i)
        dropped.append(cols[i].header)
    table = Table(title=title, title_justify="left")
    for i in shown:
        c = cols[i]
        table.add_column(c.header, justify="right" if c.right else "left", overflow="fold",
                         no_wrap=c.rank is None and total(shown) <= width)
    for r in rows:
        table.add_row(*[str(r[i]) for i in shown])
    if footer:
        table.add_section()
        for r in footer:
            table.add_row(*[str(r[i]) for i in shown], style="bold")
    return table, dropped
