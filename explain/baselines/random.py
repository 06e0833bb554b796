"""Random: uniform [0, 1) importance, the control every explainer must beat. Seeded by the fit seed and the
episode's own seed and agent, so the same episode always gets the same scores whatever the call order."""
from __future__ import annotations

import numpy as np

from magicmask.explain.baselines.base import Explainer


class RandomExplainer(Explainer):
    name = "random"

    def _fit(self, run, agent, episodes, seed):
        self.seed = int(seed)

    def _importance(self, ep):
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, int(ep.seed) & 0xFFFFFFFF, int(ep.agent), 0xA11])
        return rng.random(ep.length)


EXPLAINER = RandomExplainer   # what make_explainer('random') builds
