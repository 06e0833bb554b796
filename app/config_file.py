"""What a `--config` argument names: a YAML file (relative to the current directory) or a preset shipped as
package data (`magicmask.presets`, deploy/configs/ in the repository). Commands that start runs in subprocesses
resolve it to an absolute path first, so the runs read the same file from any working directory."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from magicmask.protocol.config import ConfigError


def preset_names() -> list[str]:
    """The presets installed with the package (file names without .yaml)."""
    return sorted(p.name[:-5] for p in files("magicmask.presets").iterdir() if p.name.endswith(".yaml"))


def resolve_config(name_or_path: str | Path) -> Path:
    """The absolute path of an existing config file, else of the preset of that name (`gates`,
    `commstudy-gates.yaml`); ConfigError naming the presets when it is neither."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path.resolve()
    preset = files("magicmask.presets") / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if path.name == str(name_or_path) and preset.is_file():
        return Path(str(preset)).resolve()
    raise ConfigError(f"--config {str(name_or_path)!r}: no such file and no preset of that name; presets: "
                      f"{', '.join(preset_names())}")
