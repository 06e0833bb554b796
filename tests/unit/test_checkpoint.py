"""learner/checkpoint.py: a checkpoint write that fails midway (a full disk) never replaces the last good one."""
import errno

import pytest
import torch

from magicmask.learner import checkpoint


def test_a_write_that_fails_midway_leaves_the_last_good_checkpoint(tmp_path, monkeypatch):
    folder = tmp_path / "checkpoints"
    good = checkpoint.save({"version": 1, "w": torch.ones(3)}, folder, 1)
    pointer = (folder / "latest").read_bytes()
    real_save = torch.save

    def full_disk(obj, f):
        f.write(b"\x80half a checkpoint")   # some bytes reach the file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError) as e:
        checkpoint.save({"version": 2, "w": torch.zeros(3)}, folder, 2)
    assert e.value.errno == errno.ENOSPC
    assert sorted(p.name for p in folder.iterdir()) == [good.name, "latest"], "a temporary or half file was left"
    assert (folder / "latest").read_bytes() == pointer and checkpoint.latest(folder) == good
    assert checkpoint.load(good)["version"] == 1 and torch.equal(checkpoint.load(good)["w"], torch.ones(3))
    monkeypatch.setattr(torch, "save", real_save)   # the disk has room again: the next write succeeds
    third = checkpoint.save({"version": 3}, folder, 3)
    assert checkpoint.latest(folder) == third == folder / "ckpt-00000003.pt"


def test_a_killed_writes_temporary_file_is_removed_and_nothing_else(tmp_path):
    from magicmask.learner import checkpoint
    good = checkpoint.save({"version": 1}, tmp_path, 1)
    dead = tmp_path / ".tmp-abc123"
    dead.write_bytes(b"x" * 1000)        # what SIGKILL mid-write leaves
    assert checkpoint.remove_partial(tmp_path) == [dead]
    assert not dead.exists() and good.exists() and checkpoint.latest(tmp_path) == good
    assert checkpoint.remove_partial(tmp_path / "missing") == []
