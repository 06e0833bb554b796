# Sourced by launch.sh, test.sh and bench.sh: creates .venv on first use and (re)installs the project when
# pyproject.toml changed. torch is installed first and pinned (torch==2.13.0: on the project's machines a
# CPU build lies on disk; an unpinned torch would pull a multi-GB CUDA build). Override with
# MAGICMASK_TORCH_SPEC, e.g. MAGICMASK_TORCH_SPEC="torch==2.13.0 --index-url <your CPU or CUDA index>".
set -euo pipefail
MM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MM_VENV="${MAGICMASK_VENV:-$MM_ROOT/.venv}"
MM_PY="${PYTHON:-python3}"
if [ ! -x "$MM_VENV/bin/python" ]; then
  echo "[bootstrap] creating $MM_VENV (first run: a minute or two)" >&2
  "$MM_PY" -m venv "$MM_VENV" || { echo "[bootstrap] 'python3 -m venv' failed: install python3-venv (apt-get install python3-venv)" >&2; exit 1; }
  "$MM_VENV/bin/python" -m pip install -q --upgrade pip
fi
# Extras to install (MM_EXTRAS overrides): by default every environment extra and the test tools, so one
# venv serves launch.sh, test.sh and bench.sh; the stamp records them
MM_EXTRAS="${MM_EXTRAS:-atari,highway,doudizhu,test}"
stamp="$MM_VENV/.magicmask-installed"
want=$( (cat "$MM_ROOT/pyproject.toml" "$MM_ROOT/deploy/bootstrap.sh"; echo "$MM_EXTRAS") | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[bootstrap] installing torch and the project into $MM_VENV" >&2
  # shellcheck disable=SC2086
  "$MM_VENV/bin/python" -m pip install -q ${MAGICMASK_TORCH_SPEC:-torch==2.13.0} 2>&1 | grep -v "^WARNING: Location" >&2 || true
  "$MM_VENV/bin/python" -c "import torch" || { echo "[bootstrap] torch did not install" >&2; exit 1; }
  "$MM_VENV/bin/python" -m pip install -q -e "$MM_ROOT[$MM_EXTRAS]" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  "$MM_VENV/bin/python" -c "import magicmask.cli" || { echo "[bootstrap] project install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
export PATH="$MM_VENV/bin:$PATH"
export SDL_VIDEODRIVER="${SDL_VIDEODRIVER:-dummy}" PYGAME_HIDE_SUPPORT_PROMPT=1
cd "$MM_ROOT"
