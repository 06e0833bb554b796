"""How well an importance ranking finds known critical steps (gates' ground truth, `info["critical"]`): used live
by the actors' evaluation, by the explanation metrics and by the report, so it is defined once, here."""
from __future__ import annotations

import numpy as np


def precision_recall(importance, critical) -> tuple[float | None, float | None]:
    """(precision@k, recall@2k) of one episode, k = its number of truly critical steps. Ranking by importance
    descending, ties to the lower step index (a stable sort). None when there is no ground truth or no critical
    step."""
    if critical is None:
        return None, None
    crit = np.asarray(critical, bool)
    k = int(crit.sum())
    if k == 0:
        return None, None
    order = np.argsort(-np.asarray(importance, np.float64), kind="stable")
    return float(crit[order[:k]].mean()), float(crit[order[:2 * k]].sum() / k)


def precision_at_k(importance, critical) -> float | None:
    """Share of the k most important steps that are truly critical, k = the number of truly critical steps."""
    return precision_recall(importance, critical)[0]
