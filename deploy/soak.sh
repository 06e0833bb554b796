#!/usr/bin/env bash
# Soak: `deploy/soak.sh HOURS [--interval S] [--warmup MIN] [--limit PCT] [--run-dir DIR] [-- RUN OPTIONS]` runs
# the default job's processes (connect4, no explanation) for HOURS hours (0.05 is 3 minutes), samples every
# process's RSS, open file descriptors and queue depths into <run dir>/soak.csv and soak.png, and exits 1 when
# a process grew by more than the limit after the warm-up (deploy/soak.py says how growth is measured).
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/bootstrap.sh"
exec python deploy/soak.py "$@"
