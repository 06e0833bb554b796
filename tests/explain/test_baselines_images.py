"""Post-hoc explainers on image observations get the agent's own torso (the Nature CNN), not an MLP on
flattened pixels: a fair comparison gives every method the network the agent itself has (issue 11)."""
import numpy as np
import pytest

from magicmask.explain.baselines import make_explainer
from magicmask.explain.baselines.edge import ImageTorso
from magicmask.explain.episodes import AgentPolicy, TrainedRun, record_episodes
from magicmask.models.networks import build_nets
from magicmask.protocol import config as C

IMAGE_ENV = "tests.envs.toy_envs:make_images"


@pytest.fixture(scope="module")
def image_run():
    cfg = C.load(overrides=[f"env.name={IMAGE_ENV}", "run.agents=1", "explain.statemask_steps=512",
                            "explain.edge_epochs=1", "explain.lazymdp_epochs=1", "ppo.hidden=16"], environ={})
    from magicmask.actors.envs import env_spec
    spec = env_spec(cfg)
    assert spec.obs_shape == (3, 36, 36)
    run = TrainedRun(cfg, None, [AgentPolicy(build_nets(spec, cfg.ppo, cfg.mask, 1, seed=0), cfg.mask.tau)], 0)
    return run, record_episodes(run, 0, 3, first_seed=7, masked=False)


@pytest.mark.parametrize("name", ["statemask", "lazymdp", "edge"])
def test_trained_explainers_read_images_with_the_agents_cnn(image_run, name):
    run, episodes = image_run
    ex = make_explainer(name, run.cfg)
    ex.fit(run, 0, episodes, seed=0)
    model = {"statemask": lambda: ex.nets, "lazymdp": lambda: ex.q, "edge": lambda: ex.encoder}[name]()
    if name == "edge":
        assert isinstance(model.obs_encoder, ImageTorso)
    else:
        assert model.image_shape == (3, 36, 36)
    assert any(p.dim() == 5 for p in model.parameters())   # stacked conv kernels [N, out, in, k, k]
    assert ex.n_params > 0 and ex.env_steps > 0
    for ep in episodes:
        imp = ex.importance(ep)
        assert imp.shape == (ep.length,) and np.isfinite(imp).all()
