#!/usr/bin/env bash
# The test suite, from a fresh clone: bootstraps .venv, then runs pytest (extra arguments pass through,
# e.g. deploy/test.sh -m "not slow" for a quick pass; the full suite includes the end-to-end trainings).
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/bootstrap.sh"
exec python -m pytest -q -p no:cacheprovider "$@"
