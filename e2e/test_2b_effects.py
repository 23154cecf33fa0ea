"""Issue 19: the e2e sees the effects of the program's Istio settings in real components, not the
settings themselves: pods injected by istiod's own injector, the listeners istiod sends the
east-west gateway, the mesh config istiod runs with, and a renewed intermediate reaching istiod.

Expected values come from the stack file (`mesh.config`: what the user asked for) or from an
independent observation (an API server, istiod, openssl-grade certificate checks), never from the
program's outputs. Each check's docstring names the one-line program changes it was run with and
seen to fail.
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from kubernetes.client import AppsV1Api, CoreV1Api

from e2e.conftest import ISTIO_TOOLS, OUT, Mesh, require_tools
from e2e.controlplane import BIN
from e2e.fake_exoscale import admin_api
from e2e.istiod import (
    ISTIO_NAMESPACE,
    Istiod,
    admitted_pod,
    injection_webhooks,
    label_selector_matches,
    workload_certificate,
)
from e2e.kube import run_until
from e2e.mesh_views import NETWORK_LABEL, SIDECAR, WEBTEST_HOST, has_sidecar, network_of, start_istiods, was_injected

DEMO_NAMESPACE = "exodemo"
WEBTEST_SNI = f"outbound_.3000_._.{WEBTEST_HOST}"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
# Istio's default trust domain: the stack file sets none, so this is what the user gets.
DEFAULT_TRUST_DOMAIN = "cluster.local"


@pytest.fixture(scope="module")
def istiods(mesh: Mesh) -> dict[str, Istiod]:
    require_tools(ISTIO_TOOLS)
    return start_istiods(mesh)


def _cluster(mesh: Mesh, name: str) -> dict[str, Any]:
    return next(c for c in mesh.config["clusters"] if c["name"] == name)


def _env(pod: Any) -> dict[str, str]:
    proxy = next(c for c in [*(pod.spec.containers or []), *(pod.spec.init_containers or [])] if c.name == SIDECAR)
    return {e.name: e.value for e in proxy.env or [] if e.value is not None}


def test_label_selector_matching_follows_kubernetes_semantics():
    labels = {"istio-injection": "enabled", "app": "web"}
    assert label_selector_matches(None, labels) and label_selector_matches({}, {})
    assert label_selector_matches({"matchLabels": {"app": "web"}}, labels)
    assert not label_selector_matches({"matchLabels": {"app": "db"}}, labels)
    expression = {"key": "istio-injection", "operator": "In", "values": ["enabled"]}
    assert label_selector_matches({"matchExpressions": [expression]}, labels)
    assert not label_selector_matches({"matchExpressions": [expression]}, {})
    not_in = {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}
    assert label_selector_matches({"matchExpressions": [not_in]}, {})  # NotIn holds for an absent key
    assert not label_selector_matches({"matchExpressions": [not_in]}, {"sidecar.istio.io/inject": "false"})
    assert label_selector_matches({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, labels)
    assert not label_selector_matches({"matchExpressions": [{"key": "istio.io/rev", "operator": "Exists"}]}, labels)
    assert label_selector_matches({"matchExpressions": [{"key": "istio.io/rev", "operator": "DoesNotExist"}]},
                                  labels)
    assert not label_selector_matches({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, labels)
    # Every requirement must hold.
    assert not label_selector_matches({"matchLabels": {"app": "web"}, "matchExpressions": [
        {"key": "istio.io/rev", "operator": "Exists"}]}, labels)


def test_the_demo_pods_are_injected_by_istiod_with_the_stacks_cluster_network_mesh_and_dns_capture(
    mesh: Mesh, istiods: dict[str, Istiod]
):
    """Seen to fail with each of: the exodemo namespace's `istio-injection` label "disabled"
    (components/demo.py: no istio-proxy), the mesh ID under `global.meshId` instead of
    `global.meshID` (components/istio.py: ISTIO_META_MESH_ID falls back to cluster.local), and
    `ISTIO_META_DNS_CAPTURE: "false"` (components/istio.py)."""
    demo = {mesh.config["demoServerCluster"]: "exo-webtest", mesh.config["demoClientCluster"]: "curl"}
    for cluster, app in demo.items():
        core = CoreV1Api(admin_api(mesh.control_planes[cluster]))
        pods = [p for p in core.list_namespaced_pod(DEMO_NAMESPACE, label_selector=f"app={app}").items
                if not p.metadata.deletion_timestamp]
        assert pods, (cluster, app)
        for pod in pods:
            assert has_sidecar(pod) and was_injected(pod), f"{cluster}: {pod.metadata.name} has no {SIDECAR}"
            env = _env(pod)
            assert env.get("ISTIO_META_CLUSTER_ID") == cluster, (cluster, env)
            assert env.get("ISTIO_META_NETWORK") == _cluster(mesh, cluster)["network"], (cluster, env)
            # The injector's network label decides the endpoint's network in every istiod.
            assert pod.metadata.labels.get(NETWORK_LABEL) == _cluster(mesh, cluster)["network"], pod.metadata.labels
            assert env.get("ISTIO_META_MESH_ID") == mesh.config["meshId"], (cluster, env)
            assert env.get("ISTIO_META_DNS_CAPTURE") == "true", (cluster, env)
            # What makes istiod route to it across networks (the injector sets it, not the test).
            assert pod.metadata.labels.get("security.istio.io/tlsMode") == "istio", pod.metadata.labels
            # The injected pod is the Deployment's pod: its ReplicaSet owns it.
            assert any(o.kind == "ReplicaSet" and o.controller for o in pod.metadata.owner_references or [])


def test_a_namespace_without_the_injection_label_gets_no_sidecar(mesh: Mesh, istiods: dict[str, Istiod]):
    """The same pod, admitted in exodemo and in `default`: the webhook selectors choose istiod
    for the first only. Seen to fail with the exodemo namespace's `istio-injection` label
    "disabled" (components/demo.py): then neither gets a sidecar."""
    server = mesh.config["demoServerCluster"]
    api = admin_api(mesh.control_planes[server])
    template = AppsV1Api(api).read_namespaced_deployment("exo-webtest", DEMO_NAMESPACE).spec.template
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"generateName": "injection-check-", "labels": template.metadata.labels},
           "spec": api.sanitize_for_serialization(template.spec)}
    assert "istio-injection" not in (CoreV1Api(api).read_namespace("default").metadata.labels or {})
    assert not injection_webhooks(api, "default", template.metadata.labels)
    for namespace, injected in ((DEMO_NAMESPACE, True), ("default", False)):
        candidate = copy.deepcopy(pod)
        candidate["metadata"]["namespace"] = namespace
        admitted = admitted_pod(istiods[server], api, candidate)
        names = [c["name"] for c in admitted["spec"].get("containers", []) + admitted["spec"].get("initContainers", [])]
        assert (SIDECAR in names) is injected, (namespace, names)


def test_the_eastwest_gateway_is_sent_sni_passthrough_chains_for_exo_webtest_on_15443(
    mesh: Mesh, istiods: dict[str, Istiod]
):
    """istiod's LDS for a proxy that is the server cluster's east-west gateway pod (its live
    labels, the stack's network): on 15443, a TLS inspector and, for exo-webtest's outbound SNI,
    a filter chain that passes the connection through to the cluster of that name without
    terminating TLS (AUTO_PASSTHROUGH). Seen to fail with the cross-network Gateway's TLS mode
    ISTIO_MUTUAL instead of AUTO_PASSTHROUGH (components/istio.py): no 15443 listener at all."""
    server = mesh.config["demoServerCluster"]
    api = admin_api(mesh.control_planes[server])
    selector = AppsV1Api(api).read_namespaced_deployment("istio-eastwestgateway", ISTIO_NAMESPACE).spec.selector
    pods = CoreV1Api(api).list_namespaced_pod(ISTIO_NAMESPACE, label_selector=",".join(
        f"{k}={v}" for k, v in selector.match_labels.items())).items
    pod = next(p for p in pods if not p.metadata.deletion_timestamp and p.status.pod_ip)
    config = run_until(lambda: _with_port(istiods[server].gateway_config(
        server, network_of(mesh, server), pod), 15443), 60,
        f"{server}'s istiod: a 15443 listener for the east-west gateway")
    listener = next(lst for lst in config["listeners"] if _port(lst) == 15443)
    assert TLS_INSPECTOR in [f["name"] for f in listener.get("listenerFilters", [])], listener.get("listenerFilters")
    chains = [c for c in listener["filterChains"]
              if WEBTEST_SNI in c.get("filterChainMatch", {}).get("serverNames", [])]
    assert chains, [c.get("filterChainMatch") for c in listener["filterChains"]]
    for chain in chains:
        assert "transportSocket" not in chain, "TLS is terminated at the gateway, not passed through"
        proxy = next(f for f in chain["filters"] if f["name"] == TCP_PROXY)
        assert proxy["typedConfig"]["cluster"] == WEBTEST_SNI, proxy


def _port(listener: dict[str, Any]) -> int:
    return listener.get("address", {}).get("socketAddress", {}).get("portValue", 0)


def _with_port(config: dict[str, Any], port: int) -> dict[str, Any] | None:
    return config if any(_port(lst) == port for lst in config["listeners"]) else None


def test_istiod_runs_with_the_stacks_mesh_id_the_default_trust_domain_and_dns_capture(
    mesh: Mesh, istiods: dict[str, Istiod]
):
    """istiod's own mesh config (/debug/mesh). Seen to fail with the mesh ID under
    `global.meshId` instead of `global.meshID` and with `ISTIO_META_DNS_CAPTURE: "false"`
    (both components/istio.py)."""
    for name, istiod in istiods.items():
        config = istiod.mesh_config()
        assert config["defaultConfig"].get("meshId") == mesh.config["meshId"], (name, config["defaultConfig"])
        assert config["trustDomain"] == DEFAULT_TRUST_DOMAIN, (name, config["trustDomain"])
        assert config["defaultConfig"].get("proxyMetadata", {}).get("ISTIO_META_DNS_CAPTURE") == "true", (
            name, config["defaultConfig"].get("proxyMetadata"))


def test_a_renewed_intermediate_reaches_istiod_and_signs_the_next_workload_certificate(
    mesh: Mesh, istiods: dict[str, Istiod]
):
    """A new intermediate (a new validity, as test_3 does) goes into `cacerts`; the kubelet-style
    swap brings it into istiod's directory; istiod reloads ("Update Istiod cacerts") and the next
    workload certificate it signs for exodemo/default chains to the new intermediate and the
    unchanged root. Seen to fail with `ignore_changes=["stringData"]` on the cacerts Secret
    (components/istio.py: no new intermediate), and, without the kubelet-style update of istiod's
    directory (the harness's follow thread not started), on istiod never reloading."""
    before = {name: _cacerts(mesh, name) for name in istiods}
    log_offsets = {name: len(istiod.log()) for name, istiod in istiods.items()}
    validity = 17400 if mesh.config.get("intermediateCaValidityHours") != 17400 else 17300
    mesh.up({**mesh.config, "intermediateCaValidityHours": validity}, "renewal_effects_seconds")
    for name, istiod in istiods.items():
        after = _cacerts(mesh, name)
        assert after["ca-cert.pem"] != before[name]["ca-cert.pem"], f"{name}: no new intermediate in cacerts"
        assert after["root-cert.pem"] == before[name]["root-cert.pem"], f"{name}: the root changed"
        run_until(lambda istiod=istiod, name=name: "Update Istiod cacerts" in istiod.log()[log_offsets[name]:], 30,
                  f"{name}'s istiod reloading its cacerts")
        # The directory istiod reads is the kubelet's layout, switched to the new files.
        directory = istiod.cacerts_dir
        assert (directory / "ca-cert.pem").is_symlink() and (directory / "..data").is_symlink()
        assert (directory / "ca-cert.pem").read_text() == after["ca-cert.pem"]
        chain = workload_certificate(istiod, DEMO_NAMESPACE, "default", after["root-cert.pem"])
        leaf, intermediate, root = (x509.load_pem_x509_certificate(chain[0].encode()),
                                    x509.load_pem_x509_certificate(after["ca-cert.pem"].encode()),
                                    x509.load_pem_x509_certificate(after["root-cert.pem"].encode()))
        leaf.verify_directly_issued_by(intermediate)
        intermediate.verify_directly_issued_by(root)
        # The renewal re-signs the intermediate's key, so the old certificate would verify the
        # leaf too; the chain istiod hands out with it says which one it signs as now.
        handed_out = [x509.load_pem_x509_certificate(pem.encode()) for pem in chain]
        old = x509.load_pem_x509_certificate(before[name]["ca-cert.pem"].encode())
        assert handed_out[1] == intermediate != old, f"{name}: istiod hands out {handed_out[1].not_valid_after_utc}"
        assert handed_out[-1] == root, f"{name}: not the unchanged root"
        identities = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert identities.get_values_for_type(x509.UniformResourceIdentifier) == [
            f"spiffe://{DEFAULT_TRUST_DOMAIN}/ns/{DEMO_NAMESPACE}/sa/default"]


def _cacerts(mesh: Mesh, cluster: str) -> dict[str, str]:
    secret = CoreV1Api(admin_api(mesh.control_planes[cluster])).read_namespaced_secret("cacerts", ISTIO_NAMESPACE)
    return {k: base64.b64decode(v).decode() for k, v in secret.data.items()}


# What `istioctl analyze` reports here, each with its reason in the README's e2e section ("What
# `istioctl analyze` reports"): (code, origin pattern). Each cluster reports its peers' too.
ANALYZE_ALLOWED = {
    # Each local API server listens on its own loopback port, so the `kubernetes` Service's
    # port differs between clusters (on SKS it is 443 everywhere).
    ("IST0170", "Service default/kubernetes"),
    # The east-west gateways' nodePorts are assigned by each API server and differ between
    # clusters; SKS assigns them the same way, so this one would be reported there too.
    ("IST0170", "Service istio-system/istio-eastwestgateway"),
    # Info: `default` is the cluster's, not the stack's, and is not labelled for injection
    # (the same on SKS).
    ("IST0102", "Namespace default"),
    # The e2e re-creates Deployments' pods through istiod's injection, not a Job's: the smoke
    # test's pod completed (KWOK) before istiod ran. On SKS the API server injects it.
    ("IST0103", "Pod exodemo/exodemo-smoke-*"),
}


def test_istioctl_analyze_reports_only_the_documented_artifacts_of_the_local_setup(
    mesh: Mesh, istiods: dict[str, Istiod]
):
    """Istio's own analyzer on every cluster, reading its peers through the remote secrets.
    Seen to fail with the cross-network Gateway's selector `{"istio": "eastwest"}`
    (components/istio.py: IST0101, referenced selector not found) and with the exodemo
    namespace's `istio-injection` label "disabled" (components/demo.py: the set changes)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for code, origin in ANALYZE_ALLOWED:
        assert f"{code} on `{origin.split(' ', 1)[1]}`" in readme, (code, origin)
    found = {}
    for name, control_plane in mesh.control_planes.items():
        result = subprocess.run(
            [str(BIN / "istioctl"), "analyze", "--all-namespaces", "--output=json",
             f"--kubeconfig={control_plane.admin_kubeconfig_path()}"],
            capture_output=True, text=True, check=False, timeout=300)
        assert result.stdout.strip(), (name, result.returncode, result.stderr[-2000:])
        messages = json.loads(result.stdout)
        OUT.mkdir(exist_ok=True)
        (OUT / f"istioctl-analyze-{name}.json").write_text(json.dumps(messages, indent=1))
        found[name] = {_allowed_as(m) or (m["code"], m.get("origin", ""), m["message"]) for m in messages}
    assert found == dict.fromkeys(mesh.control_planes, ANALYZE_ALLOWED), found


def _allowed_as(message: dict[str, Any]) -> tuple[str, str] | None:
    return next(((code, pattern) for code, pattern in ANALYZE_ALLOWED
                 if message["code"] == code and fnmatch.fnmatchcase(message.get("origin", ""), pattern)), None)
