"""What istiod and the API servers say about the mesh: shared by the istiod, re-run and
third-cluster tests. Nothing here reads the program's inputs."""

from __future__ import annotations

from typing import Any

from kubernetes.client import CoreV1Api

from e2e.conftest import Mesh
from e2e.fake_exoscale import admin_api
from e2e.istiod import ISTIO_NAMESPACE, Istiod
from e2e.kube import run_until

NETWORK_LABEL = "topology.istio.io/network"
WEBTEST_HOST = "exo-webtest.exodemo.svc.cluster.local"
WEBTEST_CLUSTER = f"outbound|3000||{WEBTEST_HOST}"
INJECTED_LABELS = {"security.istio.io/tlsMode": "istio", "service.istio.io/canonical-revision": "latest"}
GATEWAY_PORT = 15443


def network_of(mesh: Mesh, cluster: str) -> str:
    return next(c["network"] for c in mesh.config["clusters"] if c["name"] == cluster)


def eastwest_ip(mesh: Mesh, cluster: str) -> str:
    service = CoreV1Api(admin_api(mesh.control_planes[cluster])).read_namespaced_service(
        "istio-eastwestgateway", ISTIO_NAMESPACE)
    return service.status.load_balancer.ingress[0].ip


def label_pods_as_injected(mesh: Mesh) -> None:
    for control_plane in mesh.control_planes.values():
        core = CoreV1Api(admin_api(control_plane))
        for pod in core.list_namespaced_pod("exodemo").items:
            labels = {**INJECTED_LABELS, "service.istio.io/canonical-name": pod.metadata.labels.get("app", "")}
            core.patch_namespaced_pod(pod.metadata.name, "exodemo", {"metadata": {"labels": labels}})


def start_istiods(mesh: Mesh) -> dict[str, Istiod]:
    istiods: dict[str, Istiod] = mesh.extra.setdefault("istiods", {})
    for name, control_plane in mesh.control_planes.items():
        if name not in istiods:
            istiods[name] = Istiod(name, control_plane, mesh.workdir / f"istiod-{name}")
            istiods[name].start()
    mesh.extra["stop_istiods"] = lambda: [istiod.stop() for istiod in istiods.values()]
    return istiods


def synced_peers(istiod: Istiod) -> dict[str, str]:
    """Remote cluster -> secret name, for the clusters istiod lists as synced (its own cluster is
    listed too, with no secret)."""
    return {c["id"]: c["secretName"] for c in istiod.debug("clusterz") or []
            if c["syncStatus"] == "synced" and c["id"] != istiod.cluster}


def shard_endpoints(istiod: Istiod, host: str, namespace: str) -> dict[str, list[dict[str, Any]]]:
    """Cluster -> endpoints istiod holds for the service, from /debug/endpointShardz."""
    shards = ((istiod.debug("endpointShardz") or {}).get(host) or {}).get(namespace) or {}
    found: dict[str, list[dict[str, Any]]] = {}
    for key, endpoints in (shards.get("Shards") or {}).items():
        found[str(key).rsplit("/", 1)[-1]] = endpoints or []
    return found


def assert_cross_network(mesh: Mesh, istiods: dict[str, Istiod], client: str, server: str,
                         timeout: float = 60) -> None:
    """What a sidecar in `client` would be told about exo-webtest in `server`: the server's
    endpoints on the server's network, reached through the server's east-west NLB on 15443."""
    istiod, server_network, gateway = istiods[client], network_of(mesh, server), eastwest_ip(mesh, server)

    def discovered() -> bool:
        shards = shard_endpoints(istiod, WEBTEST_HOST, "exodemo")
        return bool(shards.get(server)) and all(e["Network"] == server_network for e in shards[server])

    run_until(discovered, timeout, f"{client}'s istiod: exo-webtest endpoints of {server} on {server_network}")
    run_until(lambda: any(g["Network"] == server_network and g["Addr"] == gateway and g["Port"] == GATEWAY_PORT
                          for g in istiod.debug("networkz") or []),
              timeout, f"{client}'s istiod: gateway {gateway}:{GATEWAY_PORT} for {server_network}")
    endpoints = run_until(
        lambda: istiod.eds(client, network_of(mesh, client), "exodemo", WEBTEST_CLUSTER) or None,
        timeout, f"{client}'s istiod: EDS for {WEBTEST_CLUSTER}")
    assert {(e["address"], e["port"]) for e in endpoints} == {(gateway, GATEWAY_PORT)}, endpoints


