"""Table: a CSV's columns and rows, written without pandas.

A simulated run writes its result files through this (importing pandas alone takes ~0.3 s,
a third of a short run's start-up). The text is what `DataFrame.to_csv(index=False,
float_format=FLOAT_FORMAT, lineterminator="\\n")` writes for the same rows, byte for byte:
floats in FLOAT_FORMAT, NaN and None empty, integers and strings as they are, quoted by the
csv module's minimal quoting (pandas writes through it too); tests/test_metrics_results.py
compares the two.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import pandas as pd

# Fixed float format: identical runs give byte-identical files (and diffs stay readable).
# 9 significant digits keep 1 us resolution up to 1000 s into a run.
FLOAT_FORMAT = "%.9g"


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: Sequence[tuple[Any, ...]]

    def csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        row_format = _row_format(self.rows, len(self.columns))
        if row_format is not None:  # one %-format per row: a long run's steps.csv 1.6x faster
            out.write("".join(map(row_format.__mod__, self.rows)))
        else:
            writer.writerows([_cell(v) for v in row] for row in self.rows)
        return out.getvalue()

    def to_frame(self) -> "pd.DataFrame":
        import pandas as pd
        return pd.DataFrame.from_records(list(self.rows), columns=list(self.columns))


def _needs_quoting(text: str) -> bool:
    return any(c in text for c in (",", '"', "\n", "\r"))


def _row_format(rows: Sequence[tuple[Any, ...]], num_columns: int) -> str | None:
    """A format string that writes a row as the csv writer would write its `_cell`s, when
    every column holds one kind the writer never quotes: floats without NaN (FLOAT_FORMAT),
    ints (not bools), or strings without a delimiter, quote or line break. None otherwise."""
    if not rows or num_columns < 2 or any(type(r) is not tuple or len(r) != num_columns for r in rows):
        return None
    formats = []
    for column in zip(*rows):
        kinds = set(map(type, column))
        if kinds == {float} and not any(map(math.isnan, column)):
            formats.append(FLOAT_FORMAT)
        elif kinds == {int}:
            formats.append("%d")
        elif kinds == {str} and not _needs_quoting("".join(column)):
            formats.append("%s")
        else:
            return None
    return ",".join(formats) + "\n"


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):  # numpy's float64 too
        return "" if math.isnan(value) else FLOAT_FORMAT % value
    return value
