"""Table cells as the authors' scripts saw them: ``pandas.read_csv``'s default typing, then an f-string.

The scripts read each CSV with ``pandas.read_csv`` and build the prompt with ``f"{row[col]}"``, so a cell's
text in the prompt depends on its column's inferred type: a column of whole numbers prints ``6``; one number
with a decimal point in the column makes every number print as a float (``6.0``); an empty cell (or ``NA``,
``None``, ``null``...) prints ``nan`` and turns a whole-number column into floats; a column of only
``true``/``False``/``TRUE`` prints ``True``/``False``. Any other column keeps its text as written.
:func:`render_column` reproduces that for one column of one file (each file is typed on its own, as
``read_csv`` does), so CSV and parquet copies of the data give the prompts the published figures were
measured with.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

# pandas' default na_values
NA_STRINGS = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                        "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
_INT = re.compile(r"\s*[+-]?\d+\s*")
_FLOAT = re.compile(r"\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity)\s*", re.IGNORECASE)
_TRUE, _FALSE = frozenset({"True", "TRUE", "true"}), frozenset({"False", "FALSE", "false"})


def _whole(cells: list[str]) -> bool:
    """All whole numbers that fit int64, or all non-negative ones that fit uint64 (pandas' integer columns)."""
    if not all(_INT.fullmatch(c) for c in cells):
        return False
    values = [int(c) for c in cells]
    return all(-(1 << 63) <= v < 1 << 63 for v in values) or all(0 <= v < 1 << 64 for v in values)


def _float_text(value: float) -> str:
    """``str`` of a float64 as numpy prints it (``2.0``, ``1e-05``, ``nan``, ``inf``)."""
    return "nan" if math.isnan(value) else str(value)


def render_column(cells: Sequence[str | None]) -> list[str]:
    """The text each cell of one column prints as after ``pandas.read_csv`` (default options) and ``f"{x}"``.

    Args:
        cells: the raw cell strings of one column of one file; ``None`` for a missing value.

    Returns:
        one string per cell.
    """
    raw = [None if c is None or c in NA_STRINGS else c for c in cells]
    present = [c for c in raw if c is not None]
    has_na = len(present) < len(raw)
    if present and _whole(present):
        if not has_na:
            return [str(int(c)) for c in present]
        return ["nan" if c is None else _float_text(float(int(c))) for c in raw]
    if present and all(_FLOAT.fullmatch(c) for c in present):
        return ["nan" if c is None else _float_text(float(c.strip())) for c in raw]
    if present and all(c in _TRUE or c in _FALSE for c in present):
        return ["nan" if c is None else str(c in _TRUE) for c in raw]
    return ["nan" if c is None else c for c in raw]
