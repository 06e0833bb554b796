"""'package.module:name' strings, the one way a user plugs in code (an env factory in env.name, networks in
ppo.network): the syntax check and the loader, so both fields fail the same clear way."""
from __future__ import annotations

import importlib
import re

from magicmask.protocol.errors import ConfigError

IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def load_callable(path: str, field_name: str):
    """The callable named by `path`; a ConfigError names the field, the value and why it cannot be loaded."""
    where = f"{field_name}={path!r}"
    if not IMPORT_PATH.match(path):
        raise ConfigError(f"{where}: expected 'package.module:factory'")
    mod_name, attr = path.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:  # ImportError, or anything the module raises while importing
        raise ConfigError(f"{where}: cannot import module {mod_name!r}: {type(e).__name__}: {e}") from e
    fn = getattr(mod, attr, None)
    if fn is None:
        raise ConfigError(f"{where}: module {mod_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ConfigError(f"{where}: {attr!r} in {mod_name!r} is not callable")
    return fn
