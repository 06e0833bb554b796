"""ValueMax (as StateMask uses it as a baseline): importance = |V(s_t)|, from the frozen policy's own critic.

The recorded `Episode.values` are exactly that critic's V(s) at each step (explain/episodes.py records them
with the same forward pass that picks the action), so nothing is recomputed and nothing is fitted."""
from __future__ import annotations

import numpy as np

from magicmask.explain.baselines.base import Explainer


class ValueMaxExplainer(Explainer):
    name = "valuemax"

    def _fit(self, run, agent, episodes, seed):
        pass

    def _importance(self, ep):
        return np.abs(np.asarray(ep.values, np.float64))


EXPLAINER = ValueMaxExplainer   # what make_explainer('valuemax') builds
