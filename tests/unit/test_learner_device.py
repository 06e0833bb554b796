"""The learner's device handling, checked on a CPU-only machine (CI never has a GPU).

The classic CUDA bug is a tensor made without naming its device (it lands on the CPU while the rest of the
update is on the GPU), and the second is state read back with a device round trip that only the CPU allows.
Torch's `meta` device stands in for the GPU: it has shapes and no data, and torch refuses to mix it with
CPU tensors, so both bugs fail here the way they would on a GPU."""
import numpy as np
import pytest
import torch

from magicmask.actors.envs import env_spec
from magicmask.learner import checkpoint
from magicmask.learner import server
from magicmask.learner.batched_ppo import BatchedPPO
from magicmask.learner.server import Learner
from magicmask.protocol import config as C
from tests.unit.test_ppo import CFG, _nets64, random_batch

torch.set_num_threads(1)


def test_the_update_creates_no_tensor_without_naming_its_device():
    """The whole update (advantages, minibatches, the first Adam step that creates the optimizer state, a
    partial update through an index tensor) runs with torch's default device set to `meta`: any tensor made
    without an explicit device would be a meta tensor, and mixing it with the learner's tensors raises."""
    nets = _nets64(3, 0)
    before = {k: v.detach().clone() for k, v in nets.state_dict().items()}
    ppo = BatchedPPO(nets, CFG["ppo"], CFG["mask"], device="cpu")
    batch = random_batch(3, 8, 4, 5, 6, seed=1)
    with torch.device("meta"):
        stats = ppo.update(batch, [0, 1, 2])
        partial = ppo.update({k: v[:2] for k, v in batch.items()}, [2, 0])
    assert all(np.isfinite(v).all() for v in (*stats.values(), *partial.values()))
    after = nets.state_dict()
    assert all(t.device.type == "cpu" for t in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before), "the update changed nothing"


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")  # meta params have no data to copy into
def test_resume_loads_a_checkpoint_onto_another_device(tmp_path, monkeypatch):
    """A checkpoint written by a CPU learner resumes on a learner whose device is another (`meta` here, a GPU
    in a real run): weights and optimizer state land on that device, version and steps are read exactly."""
    cfg = C.load(overrides=["env.name=gates", "run.agents=2", "net.metrics_port=0", "ppo.hidden=16"], environ={})
    spec = env_spec(cfg)
    writer = Learner(cfg, spec, tmp_path)
    group = writer.groups[0]
    batch = {k: v.to(group.nets.dtype) if v.is_floating_point() else v
             for k, v in random_batch(2, 8, cfg.env.copies, spec.n_actions, 1, seed=3).items()}
    batch["obs"] = torch.zeros((2, 8, cfg.env.copies, *spec.obs_shape), dtype=getattr(torch, spec.obs_dtype))
    group.ppo.update(batch, [0, 1])                  # the optimizer has state to carry over
    writer.version, writer.consumed = 7, np.array([1024, 2048])
    checkpoint.save(writer.state(), tmp_path / "checkpoints", writer.version)

    monkeypatch.setattr(server, "resolve_device", lambda name: torch.device("meta"))
    resumed = Learner(C.load(overrides=["env.name=gates", "run.agents=2", "net.metrics_port=0", "ppo.hidden=16",
                                        "learner.resume=true"], environ={}), spec, tmp_path)
    assert resumed.version == 7 and resumed.consumed.tolist() == [1024, 2048]
    nets, opt = resumed.groups[0].nets, resumed.groups[0].ppo.optimizer
    assert {p.device.type for p in nets.parameters()} == {"meta"}
    states = [t for st in opt.state.values() for t in st.values()]
    assert states and {t.device.type for t in states} == {"meta"}
    assert set(opt.state_dict()["state"]) == set(writer.groups[0].ppo.optimizer.state_dict()["state"])


def test_resume_takes_a_connect4_checkpoint_written_before_envs_declared_their_mirror(tmp_path):
    """EnvSpec.mirror_actions is declarative (the networks are the same without ppo.mirror): a checkpoint whose
    spec predates it resumes; one made for another env still does not."""
    overrides = ["env.name=connect4", "run.agents=2", "net.metrics_port=0", "ppo.hidden=16"]
    cfg = C.load(overrides=overrides, environ={})
    spec = env_spec(cfg)
    assert spec.mirror_actions
    writer = Learner(cfg, spec, tmp_path)
    writer.version = 3
    st = writer.state()
    del st["spec"]["mirror_actions"]
    checkpoint.save(st, tmp_path / "checkpoints", 3)
    resume = C.load(overrides=overrides + ["learner.resume=true"], environ={})
    assert Learner(resume, spec, tmp_path).version == 3
    st["spec"]["n_actions"] = 6
    checkpoint.save(st, tmp_path / "checkpoints", 4)
    with pytest.raises(ValueError, match="was made for env spec"):
        Learner(resume, spec, tmp_path)
