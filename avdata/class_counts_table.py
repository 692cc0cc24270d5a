"""The samples-per-split-and-class table, one renderer for every command that shows it (`avdata prepare`'s
result and `avdata inspect`), so both read the same way."""

from __future__ import annotations

from typing import Mapping, Sequence

from rich.markup import escape
from rich.table import Table

from avdata.printable import printable

__all__ = ["class_counts_table"]


def class_counts_table(title: str, classes: Sequence[str], counts: Mapping[str, Mapping[str, int]],
                       totals: Mapping[str, int]) -> Table:
    """One row per class (label, name, count per split; a class missing from a split counts 0) and an "all" row
    of `totals` per split. Rows, not columns, per class: AVE's 28 classes or UrbanSound's long names do not fit
    as columns of a terminal."""
    table = Table(title=title)
    table.add_column("label", justify="right", no_wrap=True)
    table.add_column("class")
    for split in counts:
        table.add_column(split, justify="right", no_wrap=True)
    for i, c in enumerate(classes):
        # class names come from a manifest someone else wrote: shown escaped, never as markup
        table.add_row(str(i), escape(printable(c)), *(str(split_counts.get(c, 0)) for split_counts in counts.values()))
    table.add_row("", "[bold]all[/]", *(str(totals.get(split, 0)) for split in counts))
    return table
