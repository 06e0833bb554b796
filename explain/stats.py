"""Summaries of repeated measurements (seeds, episodes): mean ± sample sd, and 95% intervals. Every table of the
project (metrics.json, compare, sweep, the communication study, the report) uses these, so one number is
formatted and bounded the same way everywhere."""
from __future__ import annotations

import math

import numpy as np


def finite(values) -> np.ndarray:
    """The finite numbers among `values` (None and NaN left out) as float64."""
    out = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return np.asarray(out, np.float64)


def mean_sd(values) -> tuple[float, float, int]:
    """(mean, sample sd, n) over the finite values; (nan, nan, 0) when there is none, sd 0 for a single value."""
    a = finite(values)
    if len(a) == 0:
        return float("nan"), float("nan"), 0
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0, len(a)


def fmt_mean_sd(mean: float, sd: float, n: int, digits: int | None = None) -> str:
    """'mean ± sd' ('–' when n is 0; no ± for a single value). digits: fixed decimals; None: 3 significant
    figures for the mean and 2 for the sd, whole numbers from 100 up."""
    if n == 0 or not math.isfinite(mean):
        return "–"
    if digits is not None:
        return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if n > 1 else "")
    if abs(mean) >= 100:
        return f"{mean:.0f}" + (f" ± {sd:.0f}" if n > 1 else "")
    noise = sd <= 1e-9 * max(1.0, abs(mean))  # identical seeds: floating-point noise shows as 0
    return f"{mean:.3g}" + ("" if n < 2 else " ± 0" if noise else f" ± {sd:.2g}")
