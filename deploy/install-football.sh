#!/usr/bin/env bash
# Optional extra: Google Research Football (gfootball 2.10.2) for the `grf-3v1` environment, built into the
# project's .venv. gfootball ships only a source distribution with a C++ engine, so it cannot be a pyproject
# extra: it needs Debian's build packages and a compile (8 CPU-minutes: ~5 minutes on 2 idle cores, 15 on busy
# ones, measured). The built wheel is cached (MAGICMASK_WHEEL_CACHE, default
# ~/.cache/magic-mask/wheels/<os>-py<ver>/), so a later install takes seconds (13 s measured).
# Idempotent: exits at once when the venv already imports gfootball with its engine.
#
# Why each step (measured on the project's machines):
#  - `--no-build-isolation` with psutil and the venv's python3 first on PATH: the engine's build script calls
#    `python3 -c 'import psutil'`; inside pip's isolated build that fails ("No module named 'psutil'").
#  - gym==0.25.2: gym 0.26 changed reset() and gfootball breaks ("too many values to unpack"); `six` is
#    imported by gfootball but not declared.
#  - the wheel goes in with --no-deps: its declared `pygame` would overwrite pygame-ce (highway's), and its
#    `opencv-python` would sit beside the atari extra's opencv-python-headless; the modules it imports are
#    installed explicitly below instead.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="${MAGICMASK_VENV:-$ROOT/.venv}"
GF_VERSION=2.10.2
APT_PACKAGES=(cmake build-essential python3-dev libgl1-mesa-dev libegl-dev
  libsdl2-dev libsdl2-image-dev libsdl2-ttf-dev libsdl2-gfx-dev
  libboost-python-dev libboost-filesystem-dev libboost-system-dev libboost-thread-dev)
log() { echo "[install-football] $*" >&2; }
die() { log "error: $*"; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  log "no virtual environment at $VENV yet: creating it with deploy/bootstrap.sh"
  # shellcheck source=bootstrap.sh
  source "$ROOT/deploy/bootstrap.sh"
fi
PY="$VENV/bin/python"
# The check is a real engine load (the C++ module and its shared libraries), not only the Python package.
check='import gym, gfootball.env, gfootball_engine; assert gym.__version__ == "0.25.2", gym.__version__'
if "$PY" -c "$check" >/dev/null 2>&1; then
  log "gfootball already installed in $VENV: nothing to do"
  exit 0
fi
start=$SECONDS

# 1. Debian packages: the build needs the -dev packages, and the built engine links against their libraries,
#    so they are needed for a cached wheel too. apt runs only when one is missing.
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 \
    || die "apt-get not found: gfootball needs these Debian/Ubuntu packages, install them by hand: ${missing[*]}"
  [ "$(id -u)" = 0 ] \
    || die "not root: cannot install the missing packages ${missing[*]}; run as root, or: sudo apt-get install -y ${missing[*]}"
  log "installing Debian packages: ${missing[*]}"
  aptlog=$(mktemp)
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >"$aptlog" 2>&1 || { tail -n 20 "$aptlog" >&2; die "apt-get could not install: ${missing[*]}"; }
  rm -f "$aptlog"
fi

# 2. Build tools and gfootball's runtime modules inside the venv (see the header for why each).
# pip, quiet: silent when it works, the last 40 lines of its output (a compile's included) when it fails
pipq() {
  local out rc=0
  out=$("$PY" -m pip "$@" 2>&1) || rc=$?
  [ $rc = 0 ] || printf '%s\n' "$out" | grep -v "^WARNING: Location" | tail -n 40 >&2
  return $rc
}
pipq install -q setuptools wheel psutil six absl-py scipy "gym==0.25.2" || die "pip could not install gfootball's dependencies"
"$PY" -c "import cv2" >/dev/null 2>&1 || pipq install -q opencv-python-headless || die "pip could not install opencv-python-headless"
"$PY" -c "import pygame" >/dev/null 2>&1 || pipq install -q pygame-ce || die "pip could not install pygame-ce"

# 3. The wheel: from the cache, else compiled once and cached. The key holds the OS release and the Python
#    version because the engine links against this OS's boost-python for this Python.
. /etc/os-release 2>/dev/null || true
pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
cache="${MAGICMASK_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/magic-mask/wheels}/${ID:-unknown}-${VERSION_ID:-0}-py$pyver"
mkdir -p "$cache"
wheel=$(ls "$cache"/gfootball-$GF_VERSION-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  log "compiling gfootball $GF_VERSION (about 5 minutes on 2 cores); the wheel will be cached in $cache"
  build=$(mktemp -d)
  trap 'rm -rf "$build"' EXIT
  # The engine's build script runs `python3` from PATH: it must be the venv's, which has psutil.
  PATH="$VENV/bin:$PATH" pipq wheel --no-build-isolation --no-deps "gfootball==$GF_VERSION" -w "$build" \
    || die "building gfootball failed (pip's last lines above)"
  wheel=$(ls "$build"/gfootball-$GF_VERSION-*.whl 2>/dev/null | head -n1 || true)
  [ -n "$wheel" ] || die "pip wheel finished but left no gfootball wheel in $build"
  cp "$wheel" "$cache/" && wheel="$cache/$(basename "$wheel")"
  log "compiled in $((SECONDS - start)) s"
else
  log "using the cached wheel $wheel"
fi
pipq install -q --no-deps --force-reinstall "$wheel" || die "installing $wheel failed"

"$PY" -c "$check" 2>/dev/null || die "gfootball installed but its engine does not load in $VENV (a wheel cached on another OS? remove $cache)"
log "gfootball $GF_VERSION ready in $VENV ($((SECONDS - start)) s)"
