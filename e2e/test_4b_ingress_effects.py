"""Issue 19: the demo's optional ingress (`demoIngressWeights`) as istiod sends it to the ingress
gateway. The dev stack does not set the key, so this test turns it on with weights over every
cluster but the client (70/30 with three clusters) and asks istiod, as the ingress gateway pod,
for its routes. Expected values are the weights this test asks for, never the program's outputs.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client import AppsV1Api, CoreV1Api

from e2e.conftest import ISTIO_TOOLS, Mesh, require_tools
from e2e.fake_exoscale import admin_api
from e2e.kube import run_until
from e2e.mesh_views import WEBTEST_HOST, network_of, start_istiods

DEMO_NAMESPACE = "exodemo"
INGRESS_DEPLOYMENT = "istio-ingressgateway"


def _weights(mesh: Mesh) -> dict[str, int]:
    targets = [c["name"] for c in mesh.config["clusters"] if c["name"] != mesh.config["demoClientCluster"]]
    shares = [70, 30] if len(targets) == 2 else [100 // len(targets)] * len(targets)
    shares[0] += 100 - sum(shares)
    return dict(zip(targets, shares, strict=True))


def test_the_ingress_gateway_is_sent_routes_split_by_the_stacks_weights(mesh: Mesh):
    """istiod's RDS for a proxy that is the server cluster's ingress gateway pod (its live labels):
    the route to exo-webtest splits across one subset per cluster with the weights asked for.
    Seen to fail with `"weight": 50` instead of the configured weight in the VirtualService
    (components/demo_ingress.py)."""
    require_tools(ISTIO_TOOLS)
    weights = _weights(mesh)
    mesh.up({**mesh.config, "demoIngressWeights": weights}, "ingress_seconds")
    istiods = start_istiods(mesh)
    server = mesh.config["demoServerCluster"]
    api = admin_api(mesh.control_planes[server])
    selector = AppsV1Api(api).read_namespaced_deployment(INGRESS_DEPLOYMENT, DEMO_NAMESPACE).spec.selector
    pods = CoreV1Api(api).list_namespaced_pod(DEMO_NAMESPACE, label_selector=",".join(
        f"{k}={v}" for k, v in selector.match_labels.items())).items
    pod = next(p for p in pods if not p.metadata.deletion_timestamp and p.status.pod_ip)

    def weighted() -> dict[str, int] | None:
        config = istiods[server].gateway_config(server, network_of(mesh, server), pod)
        return _webtest_split(config["routes"]) or None

    split = run_until(weighted, 60, f"{server}'s istiod: weighted routes for the ingress gateway")
    assert split == {f"outbound|3000|{cluster}|{WEBTEST_HOST}": weight for cluster, weight in weights.items()}


def _webtest_split(routes: list[dict[str, Any]]) -> dict[str, int]:
    """Envoy cluster -> weight of the route that sends to exo-webtest."""
    for configuration in routes:
        for host in configuration.get("virtualHosts", []):
            for route in host.get("routes", []):
                action = route.get("route", {})
                if "weightedClusters" in action:
                    clusters = action["weightedClusters"]["clusters"]
                    if any(WEBTEST_HOST in c["name"] for c in clusters):
                        return {c["name"]: int(c.get("weight", 0)) for c in clusters}
                elif WEBTEST_HOST in action.get("cluster", ""):
                    return {action["cluster"]: 100}
    return {}

