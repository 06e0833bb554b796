"""Atomic checkpoints: write to a temporary file in the same folder, fsync, then rename over the target,
so a crash mid-write never leaves a half checkpoint. Loaded with `weights_only=True`: a checkpoint holds
tensors and plain Python values only, never pickled objects.

Network states: a run whose agents form one network group (every env but Dou Dizhu) keeps the original
format, "nets" and "optim" at the top level; a run with several groups (EnvSpec.groups()) stores
"groups": [{"agents": [ids], "nets": ..., "optim": ...}] in group order. `group_states` reads both.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def save(state: dict, folder: Path, version: int, keep: int = 3) -> Path:
    """Write ckpt-<version>.pt atomically, point `latest` at it, and keep only the `keep` newest. A write that
    fails (a full disk) raises OSError and leaves the previous checkpoint, `latest` and no temporary file."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"ckpt-{version:08d}.pt"
    _write_atomic(target, lambda f: torch.save(state, f))
    _write_atomic(folder / "latest", lambda f: f.write(target.name.encode()))
    for old in sorted(folder.glob("ckpt-*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
    return target


def _write_atomic(path: Path, write) -> None:
    """write(file) into a temporary file beside `path`, fsync, rename over `path`, fsync the folder (so the
    rename itself survives a crash)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_partial(folder: Path) -> list[Path]:
    """Delete the temporary files of writes a killed learner left half done (`_write_atomic` cleans up after
    an error, not after SIGKILL): a learner in a crash loop would otherwise fill the disk with them. Only the
    learner writes this folder, so at its start every temporary file in it is a dead one."""
    gone = sorted(folder.glob(".tmp-*")) if folder.is_dir() else []
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def latest(folder: Path) -> Path | None:
    pointer = folder / "latest"
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text().strip()
    return path if path.is_file() else None


def load(path: Path, device="cpu") -> dict:
    return torch.load(path, map_location=device, weights_only=True)


def group_states(state: dict) -> list[dict]:
    """[{"nets": state dict, "optim": optimizer state (when saved), "agents": ids (multi-group only)}], one per
    network group in the order of EnvSpec.groups()."""
    if "groups" in state:
        return list(state["groups"])
    return [{k: state[k] for k in ("nets", "optim") if k in state}]
