"""The one table formatter of the benchmarks: plain text for the terminal, or Markdown for docs.

    >>> cols = [Column("variant", "name"), Column("fwd ms", "ms", ".1f"),
    ...         Column("x first", lambda r: r["ms"] / 2.0, ".2f")]
    >>> print(format_table([{"name": "chunked", "ms": 2.0}, {"name": "reference", "ms": 21.5}], cols))
    variant   fwd ms x first
    --------- ------ -------
    chunked      2.0    1.00
    reference   21.5   10.75

Text is left-aligned and numbers right-aligned. A column's ``width`` fixes its width, so a bench
that prints each row as soon as it is measured (``header=False`` for the rows) keeps its columns
in line; otherwise every column is as wide as its widest cell.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One column: its header, where its value comes from (a row key or a function of the row),
    the format spec of numbers (``".2f"``), a fixed width (0: fit the cells) and the text of a
    missing value (a key absent from the row, or None)."""

    header: str
    value: str | Callable[[dict], object]
    fmt: str = ""
    width: int = 0
    missing: str = "-"


def _cell(row: dict, col: Column) -> tuple[str, bool]:
    """The formatted cell and whether it is right-aligned (a number)."""
    value = col.value(row) if callable(col.value) else row.get(col.value)
    if value is None:
        return col.missing, True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, col.fmt), True
    return str(value), False


def format_table(rows: Iterable[dict], columns: list[Column], header: bool = True, markdown: bool = False) -> str:
    """``rows`` as a table with ``columns``; ``header=False`` gives the row lines alone."""
    cells = [[_cell(row, col) for col in columns] for row in rows]
    widths = [max([col.width, len(col.header)] + [len(line[i][0]) for line in cells]) for i, col in enumerate(columns)]

    def line(parts: list[tuple[str, bool]]) -> str:
        texts = [text.rjust(w) if right else text.ljust(w) for (text, right), w in zip(parts, widths)]
        return "| " + " | ".join(texts) + " |" if markdown else " ".join(texts).rstrip()

    out = []
    if header:
        # a header sits on the side its column's cells do (numbers: a format spec, or numeric cells)
        right = [bool(col.fmt) or (bool(cells) and cells[0][i][1]) for i, col in enumerate(columns)]
        out.append(line([(col.header, r) for col, r in zip(columns, right)]))
        rules = ["-" * (w + 2 if markdown else w) for w in widths]
        out.append("|" + "|".join(rules) + "|" if markdown else " ".join(rules))
    out.extend(line(parts) for parts in cells)
    return "\n".join(out)


__all__ = ["Column", "format_table"]
