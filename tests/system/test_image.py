"""The container image: deploy/Dockerfile copies every source folder the package needs, the Kubernetes overlays
name the images deploy/build-image.sh makes, and (slow, needs buildah and mmdebstrap as root) the script
builds the image without a registry and runs `magicmask --help` and a short gates run inside it."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "build-image.sh"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def package_dirs() -> set[str]:
    """The folders of [tool.setuptools.package-dir] in pyproject.toml (app, protocol, models, ...)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[tool.setuptools.package-dir]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r'=\s*"([^"]+)"', section))


def copied() -> set[str]:
    """The sources of the Dockerfile's COPY instructions."""
    srcs = set()
    for line in DOCKERFILE.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "COPY":
            srcs.update(p.rstrip("/") for p in parts[1:-1] if not p.startswith("--"))
    return srcs


def test_dockerfile_copies_every_package_folder():
    dirs, srcs = package_dirs(), copied()
    assert "app" in dirs and "models" in dirs
    missing = {d for d in dirs if not any(d == s or d.startswith(s + "/") for s in srcs)}
    assert not missing, f"deploy/Dockerfile does not COPY {sorted(missing)} (pyproject's package-dir)"
    assert {"pyproject.toml", "README.md"} <= srcs


@pytest.mark.parametrize("overlay,variant", [("cpu", "cpu"), ("gpu", "cuda")])
def test_overlays_name_the_built_image(overlay, variant):
    tag = subprocess.run(["bash", str(SCRIPT), "--variant", variant, "--print-tag"], capture_output=True,
                         text=True, timeout=30, check=True).stdout.strip()
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert tag == f"localhost/magicmask:{version}-{variant}"
    k = yaml.safe_load((ROOT / "deploy" / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text())
    (img,) = [i for i in k["images"] if i["name"] == "magicmask"]
    assert f"{img['newName']}:{img['newTag']}" == tag


def _why_no_build() -> str | None:
    missing = [t for t in ("buildah", "mmdebstrap") if shutil.which(t) is None]
    if missing:
        return (f"{' and '.join(missing)} not installed: `apt-get install buildah mmdebstrap` (deploy/build-image.sh "
                "installs them itself when run as root), then this test builds the image")
    if os.geteuid() != 0:
        return "not root: the build uses buildah's root storage (vfs, chroot isolation) and mmdebstrap's root mode"
    return None


@pytest.mark.slow
@pytest.mark.long   # ~5.5 min on 2 idle cores (11 min under load): deploy/test.sh --long runs it
@pytest.mark.timeout(1800)
@pytest.mark.skipif(_why_no_build() is not None, reason=_why_no_build() or "")
def test_image_builds_and_runs():
    """The whole script: Debian base (made once, then reused), wheels, `buildah bud`, and the checks inside the
    image as uid 10001 (`magicmask --help`, gates with 2 agents for 2,000 steps)."""
    out = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=1700)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-6000:]
    assert "usage: magicmask" in out.stdout, log[-3000:]
    assert re.search(r"gates run in the image: [1-9]\d* metrics rows", out.stdout), log[-3000:]
    assert "as uid 10001" in out.stderr
    m = re.search(r"^IMAGE (\S+) (.+)$", out.stdout, re.M)
    assert m and m.group(1).startswith("localhost/magicmask:"), log[-3000:]
