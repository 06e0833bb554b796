"""MAGIC-MASK: train teams of RL agents and explain them.

This folder (`app/`) is installed as the `magicmask` package itself, and the role folders beside it as its
subpackages (`magicmask.protocol`, `magicmask.models`, `magicmask.broker`, `magicmask.actors`,
`magicmask.learner`, `magicmask.explain`); docs/ARCHITECTURE.md has the map and the import rule.

Every role imports `magicmask.<role>`, which runs this file first, so it imports nothing: the Python API
(`magicmask.train`, `magicmask.explain_run`, `magicmask.load_run`, `magicmask.load_config`) is resolved from
`magicmask.api` on first use (PEP 562). Explaining is `explain_run`, not `explain`: `magicmask.explain` is the
explanation subpackage.
"""
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("magic-mask")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

_API = ("train", "explain_run", "load_run", "load_config")
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module("magicmask.api"), name)
    raise AttributeError(f"module 'magicmask' has no attribute {name!r}")
