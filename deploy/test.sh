#!/usr/bin/env bash
# The test suite, from a fresh clone: bootstraps .venv with every extra the tests exercise, installs the
# Debian packages they need (Chromium for the report's browser test) when run as root, then runs pytest.
# Extra arguments pass through, e.g. deploy/test.sh -m "not slow" for a quick pass.
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
exec python -m pytest -q -p no:cacheprovider "$@"
