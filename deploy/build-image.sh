#!/usr/bin/env bash
# Builds the project's container image without Docker and without a registry, then checks it.
#   1. base: mmdebstrap makes a Debian bookworm root file system with Debian's python3 and python3-venv
#      (no python image pulled), imported into buildah's storage as localhost/magicmask-base:bookworm
#      (made once; --rebuild-base makes it again);
#   2. wheels: pip on this machine puts torch (the same spec as deploy/bootstrap.sh: torch==2.13.0, or
#      MAGICMASK_TORCH_SPEC; never a multi-GB CUDA build unless you ask for one) and every other Python
#      package the image installs into build/image/wheels, so the image build itself needs no network;
#   3. image: `buildah bud` builds deploy/Dockerfile on that base (BASE_IMAGE build argument), with the
#      wheel folder mounted for its pip installs only, tagged localhost/magicmask:<version>-cpu (the name
#      the Kubernetes cpu overlay uses);
#   4. check: `magicmask --help` and a short gates run (2 agents, 2,000 steps, no explanation) inside the
#      image as its unprivileged user, then the image's size.
# buildah runs without a daemon, with isolation chroot (no OCI runtime, no user namespaces) and the storage
# driver of its storage.conf (overlay for root on Debian) or MAGICMASK_BUILDAH_DRIVER (vfs: plain copies, for
# where overlay mounts are refused); both work as root on the project's VMs. Missing buildah or mmdebstrap
# are installed with apt-get when run as root.
#
# Usage: deploy/build-image.sh [--tag NAME] [--variant NAME] [--rebuild-base] [--no-check] [--check-only]
#                              [--save FILE] [--print-tag]
#   --tag NAME      image name (default localhost/magicmask:<version>-<variant>, <version> from pyproject.toml)
#   --variant NAME  the default name's suffix: cpu (default), or cuda with a CUDA torch in MAGICMASK_TORCH_SPEC
#   --rebuild-base  make the Debian base again (to pick up Debian's security updates)
#   --no-check      build only;  --check-only  only check an image built before
#   --save FILE     also write the image as a docker-archive tarball, for `ctr -n k8s.io images import FILE`,
#                   `kind load image-archive FILE`, k3s's agent/images folder (docs/DEPLOY.md)
#   --print-tag     print the default image name and exit
# Environment: MAGICMASK_TORCH_SPEC (as in bootstrap.sh), MAGICMASK_BUILDAH_DRIVER, MAGICMASK_DEBIAN_MIRROR (default
# http://deb.debian.org/debian; security updates from <mirror>-security), PYTHON (the pip that makes the
# wheels: default python3, whose minor version must match the base's Python, 3.11 on bookworm).
set -euo pipefail
MM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$MM_ROOT"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)
variant=cpu; tag=""
base=localhost/magicmask-base:bookworm
suite=bookworm
base_python=3.11          # bookworm's python3
extras=atari,highway,doudizhu
rebuild_base=0; build=1; check=1; save=""; print_tag=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift;;
    --tag=*) tag="${1#--tag=}";;
    --variant) variant="$2"; shift;;
    --variant=*) variant="${1#--variant=}";;
    --rebuild-base) rebuild_base=1;;
    --no-check) check=0;;
    --check-only) build=0;;
    --save) save="$2"; shift;;
    --save=*) save="${1#--save=}";;
    --print-tag) print_tag=1;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0;;
    *) echo "build-image: unknown argument $1 (see --help)" >&2; exit 2;;
  esac
  shift
done
tag="${tag:-localhost/magicmask:${version}-${variant}}"
if [ "$print_tag" = 1 ]; then echo "$tag"; exit 0; fi
# chroot isolation: RUN steps and checks need no OCI runtime (runc/crun) and no user namespaces
export BUILDAH_ISOLATION=chroot
# buildah's storage driver: the one its storage.conf names (overlay for root on Debian), or
# MAGICMASK_BUILDAH_DRIVER (vfs: plain copies, works wherever overlay mounts are refused, e.g. in a container)
driver="${MAGICMASK_BUILDAH_DRIVER:-}"
bh() { buildah ${driver:+--storage-driver "$driver"} "$@"; }
say() { echo "[build-image] $*" >&2; }
now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f s", b - a }'; }

need=()
command -v buildah >/dev/null 2>&1 || need+=(buildah)
if [ "$build" = 1 ] && ! command -v mmdebstrap >/dev/null 2>&1; then need+=(mmdebstrap); fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${need[*]} (Debian packages)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") >&2
  else
    say "needs ${need[*]}: install them (apt-get install buildah mmdebstrap) or run as root"; exit 1
  fi
fi
if [ "$(id -u)" != 0 ]; then
  say "not root: buildah then needs subuid/subgid ranges for your user (rootless); mmdebstrap uses its unshare mode"
fi

t_all=$(now)
if [ "$build" = 1 ]; then
  work="$MM_ROOT/build/image"
  mkdir -p "$work"

  # ---- 1. the Debian base ----
  if [ "$rebuild_base" = 1 ] || ! bh inspect --type image "$base" >/dev/null 2>&1; then
    t=$(now)
    mirror="${MAGICMASK_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    say "making the base $base with mmdebstrap ($suite, python3 from Debian, mirror $mirror)"
    rm -f "$work/base.tar"
    # minbase + python3 (3.11) + python3-venv (ensurepip: pip inside the image's venv) + ca-certificates;
    # no recommends; documentation, man pages and translations left out (copyright files kept)
    mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      --aptopt='APT::Install-Recommends "false"' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' \
      --quiet \
      "$suite" "$work/base.tar" \
      "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $mirror-security $suite-security main"
    old_base=$(bh images --quiet --noheading "$base" 2>/dev/null || true)
    ctr=$(bh from scratch)
    bh add --quiet "$ctr" "$work/base.tar" / >/dev/null       # a local tarball is unpacked at /
    bh config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
      --cmd /bin/bash --label "org.opencontainers.image.description=Debian $suite + python3 (mmdebstrap)" "$ctr"
    bh commit --quiet --rm "$ctr" "$base" >/dev/null
    rm -f "$work/base.tar"
    [ -z "$old_base" ] || bh rmi "$old_base" >/dev/null 2>&1 || true     # the one it replaces, if unused
    say "base ready in $(took "$t")"
  else
    say "base $base already in buildah's storage (--rebuild-base to make it again)"
  fi

  # ---- 2. the wheels ----
  t=$(now)
  py="${PYTHON:-python3}"
  hostpy=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$hostpy" != "$base_python" ]; then
    say "$py is Python $hostpy but the image's is $base_python: set PYTHON to a python$base_python"; exit 1
  fi
  wheels="$work/wheels"
  rm -rf "$wheels"; mkdir -p "$wheels"
  say "collecting wheels into $wheels: ${MAGICMASK_TORCH_SPEC:-torch==2.13.0}, then the project's dependencies"
  pipw() { "$py" -m pip wheel -q -w "$wheels" "$@" > "$work/pip.log" 2>&1 \
           || { tail -30 "$work/pip.log" >&2; say "pip wheel $* failed (log: $work/pip.log)"; exit 1; }; }
  # shellcheck disable=SC2086
  pipw ${MAGICMASK_TORCH_SPEC:-torch==2.13.0}
  torch_whl=$(find "$wheels" -maxdepth 1 -name 'torch-*.whl' | head -1)
  [ -n "$torch_whl" ] || { say "no torch wheel was made (see above)"; exit 1; }
  torch_version=$(basename "$torch_whl" | cut -d- -f2)
  echo "torch==$torch_version" > "$work/constraints.txt"    # the project's torch>=2.4 must not pull another
  had_lib=0; [ -e build/lib ] && had_lib=1
  pipw -c "$work/constraints.txt" "setuptools>=68" wheel ".[$extras]"
  rm -f "$wheels"/magic_mask-*.whl            # the image builds the project from its sources
  [ "$had_lib" = 1 ] || rm -rf build/lib build/bdist.*   # what that build of the project left
  [ "$(find "$wheels" -maxdepth 1 -name 'torch-*.whl' | wc -l)" = 1 ] || { say "more than one torch wheel"; exit 1; }
  say "wheels ready in $(took "$t"): $(find "$wheels" -name '*.whl' | wc -l) files, $(du -sh "$wheels" | cut -f1), torch $torch_version"

  # ---- 3. the image ----
  t=$(now)
  say "building $tag from deploy/Dockerfile (buildah bud, storage driver $(bh info --format '{{.store.GraphDriverName}}' 2>/dev/null || echo '?'), isolation chroot)"
  old_image=$(bh images --quiet --noheading "$tag" 2>/dev/null || true)
  bh bud --quiet --pull=never -f deploy/Dockerfile \
    --build-arg BASE_IMAGE="$base" --build-arg TORCH_VERSION="$torch_version" \
    --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/wheels \
    --volume "$wheels:/wheels:ro" \
    --label "org.opencontainers.image.version=$version" \
    -t "$tag" . >/dev/null
  new_image=$(bh images --quiet --noheading "$tag")
  if [ -n "$old_image" ] && [ "$old_image" != "$new_image" ]; then    # the image it replaces, if unused
    bh rmi "$old_image" >/dev/null 2>&1 || true
  fi
  say "image $tag built in $(took "$t")"
fi
if [ -n "$save" ]; then
  t=$(now)
  rm -f "$save"
  bh push --quiet "$tag" "docker-archive:$save:$tag"
  say "saved $tag to $save ($(du -h "$save" | cut -f1)) in $(took "$t")"
fi

# ---- 4. the check ----
if [ "$check" = 1 ]; then
  bh inspect --type image "$tag" >/dev/null 2>&1 || { say "no image $tag: build it first"; exit 1; }
  ctr=$(bh from --quiet --pull=never "$tag")
  trap 'bh rm "$ctr" >/dev/null 2>&1 || true' EXIT
  say "check 1: magicmask --help in $tag"
  help=$(bh run "$ctr" -- magicmask --help)
  printf '%s\n' "$help" | sed -n 1,3p
  say "check 2: a gates run in $tag (2 agents, 2,000 steps, no explanation), as uid $(bh run "$ctr" -- id -u)"
  t=$(now)
  bh run "$ctr" -- magicmask run --config gates --agents 2 --steps 2000 --name image-check
  bh run "$ctr" -- python -c '
import json, pathlib
run = pathlib.Path("runs/image-check")
rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
rets = {a: round(d["mean_return"], 3) for r in rows for a, d in r["agents"].items() if "mean_return" in d}
last = rows[-1]
print("gates run in the image: %d metrics rows, weights version %d, env steps %s, last mean returns %s, "
      "%.0f steps/s, final checkpoint %s" % (len(rows), last["version"],
      {a: d["env_steps"] for a, d in last["agents"].items()}, rets, last["steps_per_s"],
      (run / "checkpoints" / "latest").exists()))'
  say "gates run took $(took "$t")"
fi
size=$(bh images --format '{{.Size}}' "$tag" 2>/dev/null | head -1)
say "image $tag: size ${size:-unknown}; total $(took "$t_all")"
echo "IMAGE $tag ${size:-unknown}"
