"""CSV output of every table the project writes (importance.csv, fidelity.csv, compare.csv, sweep.csv,
commstudy.csv): one cell format, so files from different commands read the same way."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np


def cell(v) -> str:
    """A CSV cell: floats with 6 significant digits, None and NaN as an empty cell (never a made-up value),
    numpy scalars as Python numbers, lists joined with ';'."""
    if v is None:
        return ""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return ";".join(cell(x) for x in v)
    return str(v)


def write_csv(path: str | Path, columns, rows) -> Path:
    """Write dict rows under `columns` (keys not in columns are left out, missing ones empty)."""
    path = Path(path)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(columns))
        for r in rows:
            w.writerow([cell(r.get(c)) for c in columns])
    return path
