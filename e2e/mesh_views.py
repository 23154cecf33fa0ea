"""What istiod and the API servers say about the mesh: shared by the istiod, re-run and
third-cluster tests. Expected values come from the stack file (`mesh.config`, what the user asked
for) or from an independent observation (an API server, istiod), never from the program's outputs."""

from __future__ import annotations

from typing import Any

from kubernetes.client import AdmissionregistrationV1Api, AppsV1Api, CoreV1Api

from e2e.conftest import Mesh
from e2e.fake_exoscale import admin_api
from e2e.istiod import ISTIO_NAMESPACE, Istiod, injection_webhooks, reinject_deployment
from e2e.kube import run_until
from e2e.session import stop_all

NETWORK_LABEL = "topology.istio.io/network"
WEBTEST_HOST = "exo-webtest.exodemo.svc.cluster.local"
WEBTEST_CLUSTER = f"outbound|3000||{WEBTEST_HOST}"
SIDECAR = "istio-proxy"
INJECTION_STATUS = "sidecar.istio.io/status"
GATEWAY_PORT = 15443


def network_of(mesh: Mesh, cluster: str) -> str:
    return next(c["network"] for c in mesh.config["clusters"] if c["name"] == cluster)


def eastwest_ip(mesh: Mesh, cluster: str) -> str:
    service = CoreV1Api(admin_api(mesh.control_planes[cluster])).read_namespaced_service(
        "istio-eastwestgateway", ISTIO_NAMESPACE)
    return service.status.load_balancer.ingress[0].ip


def was_injected(pod: Any) -> bool:
    """istiod's injector marks every pod it injected with its status annotation (a gateway
    chart's pod has an `istio-proxy` container, image `auto`, before injection)."""
    return INJECTION_STATUS in (pod.metadata.annotations or {})


def has_sidecar(pod: Any) -> bool:
    """An istio-proxy container, as a container or a native sidecar (an init container)."""
    return any(c.name == SIDECAR for c in [*(pod.spec.containers or []), *(pod.spec.init_containers or [])])


def inject_workloads(istiod: Istiod) -> list[Any]:
    """What the API server would have done with istiod's injection webhook on (it is off here,
    see README): every Deployment whose pods the webhook configuration's selectors choose and
    that has a pod without the sidecar gets its pods re-created through istiod's injection
    (`reinject_deployment`). Returns the pods created."""
    api = admin_api(istiod.control_plane)
    core, created = CoreV1Api(api), []
    for deployment in AppsV1Api(api).list_deployment_for_all_namespaces().items:
        namespace, template = deployment.metadata.namespace, deployment.spec.template
        if not injection_webhooks(api, namespace, template.metadata.labels or {}):
            continue
        selector = ",".join(f"{k}={v}" for k, v in deployment.spec.selector.match_labels.items())
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        if any(not was_injected(p) for p in pods if not p.metadata.deletion_timestamp):
            created += reinject_deployment(istiod, api, namespace, deployment.metadata.name)
    return created


def start_istiods(mesh: Mesh) -> dict[str, Istiod]:
    """An istiod per control plane (those already running are kept), and every workload the
    injector selects injected by it. All are stopped with the session, also when one fails."""
    istiods: dict[str, Istiod] = mesh.extra.setdefault("istiods", {})
    mesh.extra["stop_istiods"] = lambda: stop_all([istiod.stop for istiod in istiods.values()])
    for name, control_plane in mesh.control_planes.items():
        if name not in istiods:
            istiods[name] = Istiod(name, control_plane, mesh.workdir / f"istiod-{name}")
            istiods[name].start()
    for name, istiod in istiods.items():
        # istiod patches its CA into the webhook configuration once it is up; the API server
        # (and so `injection_webhooks`) verifies istiod against it.
        run_until(lambda istiod=istiod: _webhook_ca_patched(istiod), 60, f"{name}: istiod's caBundle in its webhook")
        inject_workloads(istiod)
    return istiods


def _webhook_ca_patched(istiod: Istiod) -> bool:
    webhooks = [w for c in AdmissionregistrationV1Api(admin_api(istiod.control_plane))
                .list_mutating_webhook_configuration().items for w in c.webhooks or []
                if w.client_config.service and w.client_config.service.name == "istiod"]
    return bool(webhooks) and all(w.client_config.ca_bundle for w in webhooks)


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


