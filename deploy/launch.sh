#!/usr/bin/env bash
# The main job: deploy/launch.sh --agents 4 trains 4 MAGIC-MASK agents on Connect Four on this machine, then
# explains them (runs/<name>/report/index.html).
# Any `magicmask run` flag passes through (--env gates, --steps N, --set section.field=value, ...).
# The preset deploy/configs/<env>.yaml is used when it exists and no --config is given.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/bootstrap.sh"
env_name=connect4; have_config=0; prev=""
for a in "$@"; do
  [ "$prev" = "--env" ] && env_name="$a"
  case "$a" in --env=*) env_name="${a#--env=}";; --config|--config=*) have_config=1;; esac
  prev="$a"
done
preset=()
if [ "$have_config" = 0 ] && [ -f "deploy/configs/$env_name.yaml" ]; then preset=(--config "deploy/configs/$env_name.yaml"); fi
exec magicmask run --explain "${preset[@]}" "$@"
