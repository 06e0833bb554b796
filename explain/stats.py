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


def bootstrap_ci(values, level: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> list[float]:
    """[lo, hi]: the percentile bootstrap interval of the mean of the finite values (resampling the values,
    e.g. episodes, with replacement; scipy.stats.bootstrap). A single value or identical values give a
    zero-width interval; no value gives [nan, nan]."""
    from scipy.stats import bootstrap

    a = finite(values)
    if len(a) == 0:
        return [float("nan"), float("nan")]
    if len(a) == 1 or np.ptp(a) == 0:
        return [float(a[0]), float(a[0])] if len(a) == 1 else [float(a.mean()), float(a.mean())]
    res = bootstrap((a,), np.mean, confidence_level=level, n_resamples=n_resamples, method="percentile",
                    random_state=np.random.default_rng(seed), vectorized=True)
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def paired_differences(a, b) -> np.ndarray:
    """a[i] - b[i] for the pairs where both are finite (e.g. a method's drop and its control on one episode)."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired_differences: {x.shape} vs {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok] - y[ok]


def significant(ci) -> str:
    """'+' when a 95% interval lies above 0, '-' when below, '' when it contains 0 (or is missing)."""
    lo, hi = (float(v) for v in ci) if ci is not None else (math.nan, math.nan)
    return "+" if lo > 0 else "-" if hi < 0 else ""


def t_interval(values, level: float = 0.95) -> list[float]:
    """[lo, hi]: the Student-t interval of the mean of the finite values (e.g. one metric over seeds); [nan, nan]
    with fewer than two values."""
    from scipy.stats import t

    a = finite(values)
    if len(a) < 2:
        return [float("nan"), float("nan")]
    half = float(t.ppf(0.5 + level / 2, len(a) - 1)) * float(a.std(ddof=1)) / math.sqrt(len(a))
    return [float(a.mean() - half), float(a.mean() + half)]


def fmt_interval(value: float, ci, n: int) -> str:
    """'value [lo, hi]': a mean or a difference with its 95% interval ('–' when n is 0 or the value is missing;
    the value alone without a finite interval). Numbers as in fmt_mean_sd: whole from 100 up, else 3
    significant figures; floating-point noise (below 1e-9 of the largest number shown) as 0."""
    if n == 0 or not math.isfinite(value):
        return "–"
    shown = [value, *(float(v) for v in ci)]
    if not all(math.isfinite(v) for v in shown):
        shown = [value]
    tiny = 1e-9 * max(1.0, *(abs(v) for v in shown))
    text = [f"{v:.0f}" if abs(v) >= 100 else f"{0.0 if abs(v) < tiny else v:.3g}" for v in shown]
    return text[0] + (f" [{text[1]}, {text[2]}]" if len(text) == 3 else "")
