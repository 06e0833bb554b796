#!/usr/bin/env bash
# The test suite, from a fresh clone: bootstraps .venv with every extra the tests exercise, installs the
# Debian packages they need (Chromium for the report's browser test) and builds gfootball (the grf-3v1
# tests) when run as root, then runs pytest.
# Extra arguments pass through, e.g. deploy/test.sh -m "not slow" for a quick pass. Tests marked `long` (the
# container image build and run, ~5.5 min on 2 cores) run only with deploy/test.sh --long.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/bootstrap.sh"
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[test] installing Debian's chromium for the report test" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >&2 \
      || echo "[test] could not install chromium: the browser test will be skipped" >&2
  else
    echo "[test] chromium not found and not root: the report's browser test will be skipped" >&2
  fi
fi
# Google Research Football for the grf-3v1 tests: an optional extra that compiles once (~5 minutes on 2 cores,
# then a cached wheel installs in seconds); without it those tests skip, saying why.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  bash "$MM_ROOT/deploy/install-football.sh" \
    || echo "[test] gfootball did not install (see above): the grf-3v1 tests will be skipped" >&2
elif "$MM_VENV/bin/python" -c "import gfootball.env, gfootball_engine" >/dev/null 2>&1; then
  echo "[test] gfootball is installed: the grf-3v1 tests run" >&2
else
  echo "[test] not root or no apt-get, so gfootball cannot be built here: the grf-3v1 tests will be skipped" \
       "(deploy/install-football.sh installs it as root)" >&2
fi
args=() long=0
for a in "$@"; do
  if [ "$a" = "--long" ]; then long=1; else args+=("$a"); fi
done
[ "$long" = 1 ] || args=(-m "not long" "${args[@]}")   # a -m of the caller's comes later and wins
exec python -m pytest -q -p no:cacheprovider "${args[@]}"
