"""Markdown tables, as the reports and model cards print them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], *, numbers: bool = True) -> list[str]:
    """The lines of a markdown table: ``header``, its rule, one line per row of cells. Columns after the first are
    right-aligned when they hold ``numbers``."""
    rule = "|---|" + ("---:|" if numbers else "---|") * (len(header) - 1)
    return ["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(row) + " |" for row in rows)]
