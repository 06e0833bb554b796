#!/usr/bin/env bash
# Benchmarks (not tests): collection steps/s vs. the random-action ceiling, learner updates/s batched vs.
# a per-agent loop. Paste the output, with the machine line, into docs/BENCHMARKS.md.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/bootstrap.sh"
exec python deploy/bench.py "$@"
