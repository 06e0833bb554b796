"""MAGIC-MASK's own explanation: the trained mask's keep-probability m recorded with the episode
(`Episode.m`; high m = the mask would not perturb the step = critical). Nothing to fit."""
from __future__ import annotations

import numpy as np

from magicmask.explain.baselines.base import Explainer


class MagicMaskExplainer(Explainer):
    name = "magicmask"

    def _fit(self, run, agent, episodes, seed):
        pass

    def _importance(self, ep):
        return np.asarray(ep.m, np.float64)


EXPLAINER = MagicMaskExplainer   # what make_explainer('magicmask') builds
