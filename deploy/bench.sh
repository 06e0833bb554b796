#!/usr/bin/env bash
# Benchmarks (not tests), one after the other on the same cores: collection steps/s vs. the random-action
# ceiling and learner updates/s batched vs. a per-agent loop (deploy/bench.py), then highway-env plain vs.
# our adapter (deploy/bench_highway.py), then the communication figures (deploy/bench_comm.py: snapshot
# latency, broker CPU per broadcast, CURVE on the fragment path). Paste the output, with the machine line,
# into docs/BENCHMARKS.md.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/bootstrap.sh"
python deploy/bench.py "$@"
echo
echo "## highway-env, 4 controlled vehicles, one core"
echo '```'
python deploy/bench_highway.py --agents 4 --seconds 30 --rounds 3
echo '```'
echo
echo "## Communication"
echo
python deploy/bench_comm.py
