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
        writer.writerows([_cell(v) for v in row] for row in self.rows)
        return out.getvalue()

    def to_frame(self) -> "pd.DataFrame":
        import pandas as pd
        return pd.DataFrame.from_records(list(self.rows), columns=list(self.columns))


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):  # numpy's float64 too
        return "" if math.isnan(value) else FLOAT_FORMAT % value
    return value
