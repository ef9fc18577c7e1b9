"""GitHub markdown tables for REPORT.md (no tabulate dependency)."""
from __future__ import annotations

from typing import Any, Sequence

import pandas as pd


def cell(value: Any, float_format: str = ".4g") -> str:
    """One cell: floats with `float_format` (NaN empty), dicts as k=v, pipes escaped."""
    if isinstance(value, float):
        text = "" if value != value else format(value, float_format)
    elif isinstance(value, dict):
        text = ", ".join(f"{k}={cell(x, float_format)}" for k, x in value.items())
    elif value is None:
        text = ""
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def md_rows(columns: Sequence[Any], rows: Sequence[Sequence[Any]], float_format: str = ".4g") -> str:
    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v, float_format) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def md_table(df: pd.DataFrame) -> str:
    """A DataFrame as a markdown table; floats with 4 significant digits."""
    if df.empty:
        return "_no data_\n"
    return md_rows([str(c) for c in df.columns], list(df.itertuples(index=False)))
