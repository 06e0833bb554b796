"""deploy/k8s: every overlay renders offline (`kubectl kustomize`), every manifest validates strictly against
the Kubernetes 1.30 schemas bundled with kubernetes-validate, and the manifests agree with the run config
they carry (ports, agent count, addresses, keys, GPU only in the gpu overlay). No cluster is needed."""
import os
import shutil
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from magicmask.protocol import config as C
from magicmask.protocol import security as S

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
K8S_VERSION = "1.30"
KUBECTL = shutil.which("kubectl")

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: cannot render kustomize offline")]
kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (offline schemas)")


def render(path: Path) -> list[dict]:
    out = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request):
    return request.param, render(K8S / "overlays" / request.param)


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs):
    return {**by_kind(docs, "Deployment"), **by_kind(docs, "StatefulSet")}


def component(w) -> str:
    return w["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]


def container(w) -> dict:
    (c,) = w["spec"]["template"]["spec"]["containers"]
    return c


def pod_config(docs, w, tmp_path) -> C.Config:
    """The config the pod's process resolves: the ConfigMap's file plus the container's environment."""
    vol = next(v for v in w["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    cm = by_kind(docs, "ConfigMap")[vol["configMap"]["name"]]
    path = tmp_path / f"{w['metadata']['name']}.yaml"
    path.write_text(cm["data"]["config.yaml"])
    env = {e["name"]: e["value"] for e in container(w).get("env", [])}
    return C.load(path, environ=env)


def test_every_manifest_validates_strictly(overlay):
    name, docs = overlay
    assert {d["kind"] for d in docs} == {"ConfigMap", "Service", "Deployment", "StatefulSet"}
    for d in docs:
        kv.validate(d, K8S_VERSION, strict=True)  # raises with the first error
    # strictness is real: an unknown field is refused
    bad = yaml.safe_load(yaml.safe_dump(workloads(docs)["magicmask-broker"]))
    bad["spec"]["template"]["spec"]["containers"][0]["cpus"] = 2
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSION, strict=True)


def test_manifests_agree_with_the_config(overlay, tmp_path):
    name, docs = overlay
    ws = workloads(docs)
    services = by_kind(docs, "Service")
    assert {component(w) for w in ws.values()} == {"broker", "learner", "actor"}
    assert ws["magicmask-broker"]["kind"] == "Deployment" and ws["magicmask-broker"]["spec"]["replicas"] == 1
    learner, actors = ws["magicmask-learner"], ws["magicmask-actor"]
    assert learner["kind"] == "StatefulSet" and learner["spec"]["replicas"] == 1
    assert actors["kind"] == "StatefulSet"
    for wname, w in ws.items():
        cfg = pod_config(docs, w, tmp_path)
        role = component(w)
        c = container(w)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        net = cfg.net
        if role == "broker":
            want = {"reports": net.broker_reports_port, "snapshots": net.broker_snapshots_port,
                    "state": net.broker_router_port, "metrics": cfg.metrics_port_of("broker")}
        elif role == "learner":
            want = {"fragments": net.learner_fragments_port, "weights": net.learner_weights_port,
                    "state": net.learner_router_port, "metrics": cfg.metrics_port_of("learner")}
        else:
            # one pod per agent, all from one template: every agent's metrics port must be the same
            assert {cfg.metrics_port_of("actor", i) for i in range(cfg.run.agents)} == {ports["metrics"]}
            want = {"metrics": cfg.metrics_port_of("actor", 0)}
            assert w["spec"]["replicas"] == cfg.run.agents, "actor replicas != run.agents of the ConfigMap"
        assert ports == want, (wname, ports, want)
        # Prometheus scrapes the metrics port, which listens beyond loopback in the pod
        ann = w["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == ports["metrics"]
        assert net.metrics_host == "0.0.0.0"
        # servers bind beyond loopback, so keys must be on (config validation would refuse otherwise)
        assert cfg.security.keys_dir and not net.insecure
        if role != "actor":
            assert net.host == "0.0.0.0"
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        vols = {v["name"]: v for v in w["spec"]["template"]["spec"]["volumes"]}
        for sub in ("public_keys", "private_keys"):
            vol = vols[mounts[f"{cfg.security.keys_dir}/{sub}"]]
            assert "secret" in vol, (wname, sub)
        # every Service that selects these pods exposes exactly the container's ports, by name
        sel = w["spec"]["template"]["metadata"]["labels"]
        mine = [s for s in services.values() if s["spec"]["selector"].items() <= sel.items()]
        assert len(mine) == 1, (wname, [s["metadata"]["name"] for s in mine])
        svc = mine[0]
        assert {p["targetPort"]: p["port"] for p in svc["spec"]["ports"]} == ports
        if role == "broker":   # it hears the learner's end-of-run Stop on the learner's weights port
            assert component_of_service(services[cfg.learner_addr()]) == "learner"
        if role == "actor":
            assert svc["spec"].get("clusterIP") == "None" and w["spec"]["serviceName"] == svc["metadata"]["name"]
            # the actors reach the broker and the learner by the Services named in their environment
            assert cfg.broker_addr() in services and cfg.learner_addr() in services
            assert component_of_service(services[cfg.broker_addr()]) == "broker"
            assert component_of_service(services[cfg.learner_addr()]) == "learner"
            svc_ports = {p["port"] for p in services[cfg.broker_addr()]["spec"]["ports"]}
            assert {net.broker_reports_port, net.broker_snapshots_port, net.broker_router_port} <= svc_ports
            svc_ports = {p["port"] for p in services[cfg.learner_addr()]["spec"]["ports"]}
            assert {net.learner_fragments_port, net.learner_weights_port, net.learner_router_port} <= svc_ports
    # the learner keeps its run directory (checkpoints) on a volume claim, mounted where --run-dir points
    (claim,) = learner["spec"]["volumeClaimTemplates"]
    mount = {m["name"]: m["mountPath"] for m in container(learner)["volumeMounts"]}[claim["metadata"]["name"]]
    assert "--run-dir " + mount + "/run" in " ".join(container(learner)["args"])


def component_of_service(svc) -> str:
    return svc["spec"]["selector"]["app.kubernetes.io/component"]


def test_gpu_only_in_the_gpu_overlay(overlay):
    name, docs = overlay
    for wname, w in workloads(docs).items():
        limits = container(w)["resources"].get("limits", {})
        requests = container(w)["resources"]["requests"]
        assert "cpu" in requests and "memory" in requests  # every pod is sized
        wants_gpu = name == "gpu" and wname == "magicmask-learner"
        assert ("nvidia.com/gpu" in limits) == wants_gpu, (name, wname, limits)
        if wants_gpu:
            assert int(limits["nvidia.com/gpu"]) == 1
    tags = {container(w)["image"] for w in workloads(docs).values()}
    # the names deploy/build-image.sh gives its images (--variant cpu|cuda; tests/system/test_image.py)
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert tags == {f"localhost/magicmask:{version}-{'cuda' if name == 'gpu' else 'cpu'}"}


def test_actor_pod_ordinal_is_the_agent_id(tmp_path):
    """Run the actor container's shell command with a stand-in `magicmask` that prints its arguments."""
    docs = render(K8S / "overlays" / "cpu")
    c = container(workloads(docs)["magicmask-actor"])
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "magicmask").write_text('#!/bin/sh\necho "$@"\n')
    (fake / "magicmask").chmod(0o755)
    for ordinal in (0, 3, 12):
        env = {"PATH": f"{fake}:{os.environ['PATH']}", "HOSTNAME": f"magicmask-actor-{ordinal}"}
        out = subprocess.run([*c["command"], *c["args"]], env=env, capture_output=True, text=True, timeout=10)
        assert out.returncode == 0, out.stderr
        args = out.stdout.split()
        assert args[:3] == ["actor", "--agent", str(ordinal)] and "--config" in args


def test_key_secrets_validate_and_match_the_mounts(tmp_path):
    docs = render(K8S / "overlays" / "cpu")
    cm = next(iter(by_kind(docs, "ConfigMap").values()))
    agents = yaml.safe_load(cm["data"]["config.yaml"])["run"]["agents"]
    keys = tmp_path / "keys"
    S.generate_keys(keys, S.default_names(agents))
    out = subprocess.run([str(K8S / "secrets.sh"), str(keys)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    secrets = {d["metadata"]["name"]: d for d in yaml.safe_load_all(out.stdout) if d}
    for d in secrets.values():
        assert d["kind"] == "Secret"
        kv.validate(d, K8S_VERSION, strict=True)
    assert sorted(secrets["magicmask-public-keys"]["data"]) == sorted(f"{n}.key" for n in S.default_names(agents))
    assert sorted(secrets["magicmask-actor-keys"]["data"]) == sorted(f"actor-{i}.key_secret" for i in range(agents))
    assert list(secrets["magicmask-broker-key"]["data"]) == ["broker.key_secret"]
    assert list(secrets["magicmask-learner-key"]["data"]) == ["learner.key_secret"]
    # every Secret a pod mounts is one of these, and no pod gets another role's private key
    private = {"broker": "magicmask-broker-key", "learner": "magicmask-learner-key", "actor": "magicmask-actor-keys"}
    for w in workloads(docs).values():
        names = {v["secret"]["secretName"] for v in w["spec"]["template"]["spec"]["volumes"] if "secret" in v}
        assert names == {"magicmask-public-keys", private[component(w)]}
    bad = subprocess.run([str(K8S / "secrets.sh"), str(tmp_path / "none")], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
