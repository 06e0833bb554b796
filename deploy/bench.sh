#!/usr/bin/env bash
# Benchmarks (not tests), one after the other on the same cores: collection steps/s vs. the random-action
# ceiling and learner updates/s batched vs. a per-agent loop (deploy/bench.py), then highway-env plain vs.
# our adapter (deploy/bench_highway.py), then the communication figures (deploy/bench_comm.py: snapshot
# latency, broker CPU per broadcast, CURVE on the fragment path), then our system against a single-process PPO
# loop and RLlib (deploy/bench_peer.py). Paste the output, with the machine line,
# into docs/BENCHMARKS.md.
# deploy/bench.sh --gpu: on a machine with an NVIDIA GPU, only the learner figures on it (batched vs.
# per-agent updates on connect4's MLPs, then Pong's Nature CNN with samples/s); it stops with a message where
# torch sees no GPU. Needs a CUDA build of torch (MAGICMASK_TORCH_SPEC, deploy/bootstrap.sh).
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/bootstrap.sh"
if [ "${1:-}" = "--gpu" ]; then
  shift
  exec python deploy/bench.py --only learner --device cuda --agents 1,2,4,8,16 --updates 20 "$@"
fi
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
echo
# ours vs. the single-process PPO loop vs. RLlib's PPO (about 20-25 min; makes /tmp/rllib-venv on first use)
python deploy/bench_peer.py --steps 100000 --target 0.2
