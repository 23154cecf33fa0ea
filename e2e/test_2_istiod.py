"""Issue 12: a real istiod per cluster, fed from what the program put into each API server.

Every assertion reads istiod (its debug views, its xDS answers) or the API server; expected
values come from the stack file (`mesh.config`) or from another observation, never from the
program's outputs. The API server's webhooks are off (README), so `start_istiods` re-creates the
pods the injector selects through istiod's own injection endpoint: the demo's pods carry the
sidecar and the labels istiod's injection gives them, and istiod only routes such mTLS-capable
endpoints across networks.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import CoreV1Api

from e2e.conftest import ISTIO_TOOLS, Mesh, require_tools
from e2e.fake_exoscale import admin_api
from e2e.istiod import ISTIO_NAMESPACE, Istiod
from e2e.kube import client_for, run_until
from e2e.mesh_views import (
    NETWORK_LABEL,
    WEBTEST_CLUSTER,
    WEBTEST_HOST,
    assert_cross_network,
    network_of,
    shard_endpoints,
    start_istiods,
    synced_peers,
)


@pytest.fixture(scope="module")
def istiods(mesh: Mesh) -> Iterator[dict[str, Istiod]]:
    require_tools(ISTIO_TOOLS)
    yield start_istiods(mesh)


def test_istiod_distributes_the_stacks_root_not_one_it_made_up(mesh: Mesh, istiods: dict[str, Istiod]):
    for name, istiod in istiods.items():
        core = CoreV1Api(admin_api(mesh.control_planes[name]))
        # The root the cluster's API server holds in `cacerts` (test_1 checks it is the stack's).
        root = base64.b64decode(core.read_namespaced_secret("cacerts", ISTIO_NAMESPACE).data["root-cert.pem"]).decode()
        config_map = run_until(lambda core=core: _config_map(core, "istio-ca-root-cert", "exodemo"), 60,
                               f"{name}: istio-ca-root-cert in exodemo")
        assert config_map.data["root-cert.pem"].strip() == root.strip(), name
        # A self-signed istiod would have stored its own CA here.
        assert _secret(core, "istio-ca-secret", ISTIO_NAMESPACE) is None, name
        assert "Use root cert from" in istiod.log() and "etc/cacerts" in istiod.log(), name


def _config_map(core: CoreV1Api, name: str, namespace: str) -> Any:
    return next((c for c in core.list_namespaced_config_map(namespace).items if c.metadata.name == name), None)


def _secret(core: CoreV1Api, name: str, namespace: str) -> Any:
    return next((s for s in core.list_namespaced_secret(namespace).items if s.metadata.name == name), None)


def test_every_istiod_lists_every_other_cluster_as_synced_under_the_programs_secret(
    mesh: Mesh, istiods: dict[str, Istiod]
):
    for name, istiod in istiods.items():
        expected = {peer: f"{ISTIO_NAMESPACE}/istio-remote-secret-{peer}" for peer in istiods if peer != name}
        run_until(lambda istiod=istiod, expected=expected: synced_peers(istiod) == expected, 60,
                  f"{name}'s istiod: {expected} synced")


def test_deleting_a_remote_secret_makes_its_cluster_leave_and_restoring_it_brings_it_back(
    mesh: Mesh, istiods: dict[str, Istiod]
):
    holder, peer = list(istiods)[:2]
    core = CoreV1Api(admin_api(mesh.control_planes[holder]))
    name = f"istio-remote-secret-{peer}"
    saved = core.read_namespaced_secret(name, ISTIO_NAMESPACE)
    core.delete_namespaced_secret(name, ISTIO_NAMESPACE)
    try:
        run_until(lambda: peer not in synced_peers(istiods[holder]), 60, f"{peer} leaving {holder}'s clusterz")
    finally:
        core.create_namespaced_secret(ISTIO_NAMESPACE, {
            "metadata": {"name": name, "labels": saved.metadata.labels, "annotations": saved.metadata.annotations},
            "data": saved.data,
        })
    run_until(lambda: peer in synced_peers(istiods[holder]), 60, f"{peer} back in {holder}'s clusterz")


def test_the_client_sidecar_is_sent_the_servers_eastwest_gateway_not_its_pod(
    mesh: Mesh, istiods: dict[str, Istiod]
):
    client, server = mesh.config["demoClientCluster"], mesh.config["demoServerCluster"]
    assert_cross_network(mesh, istiods, client, server)
    pod_ips = {p.status.pod_ip for p in CoreV1Api(admin_api(mesh.control_planes[server]))
               .list_namespaced_pod("exodemo", label_selector="app=exo-webtest").items}
    assert pod_ips and all(ip.startswith("10.") for ip in pod_ips)
    sent = istiods[client].eds(client, network_of(mesh, client), "exodemo", WEBTEST_CLUSTER)
    assert not pod_ips & {e["address"] for e in sent}


def test_the_cross_network_assertion_fails_when_the_servers_pods_claim_the_wrong_network(
    mesh: Mesh, istiods: dict[str, Istiod]
):
    """The injector labels each pod with the network istiod's values give it, and that label
    decides the endpoint's network (ahead of istio-system's). A wrong one must fail the check."""
    client, server = mesh.config["demoClientCluster"], mesh.config["demoServerCluster"]
    core = CoreV1Api(admin_api(mesh.control_planes[server]))
    pods = core.list_namespaced_pod("exodemo", label_selector="app=exo-webtest").items
    right = {p.metadata.name: p.metadata.labels[NETWORK_LABEL] for p in pods}
    assert set(right.values()) == {network_of(mesh, server)}, right
    for name in right:
        core.patch_namespaced_pod(name, "exodemo", {"metadata": {"labels": {NETWORK_LABEL: "network-wrong"}}})
    try:
        # Once the client's istiod has taken the label in, the check must fail.
        run_until(lambda: any(e["Network"] == "network-wrong" for e in shard_endpoints(
            istiods[client], WEBTEST_HOST, "exodemo").get(server, [])), 60,
            f"{client}'s istiod: {server}'s endpoints on network-wrong")
        with pytest.raises(AssertionError):
            assert_cross_network(mesh, istiods, client, server, timeout=20)
    finally:
        for name, network in right.items():
            core.patch_namespaced_pod(name, "exodemo", {"metadata": {"labels": {NETWORK_LABEL: network}}})
    assert_cross_network(mesh, istiods, client, server)


def test_a_remote_secret_can_read_every_secret_of_its_cluster_including_the_intermediate_ca_key(
    mesh: Mesh, istiods: dict[str, Istiod]
):
    """The blast radius the README's security section documents: the istiod chart's reader
    ClusterRole grants get/list/watch on all Secrets."""
    holder, target = mesh.config["demoClientCluster"], mesh.config["demoServerCluster"]
    secret = CoreV1Api(admin_api(mesh.control_planes[holder])).read_namespaced_secret(
        f"istio-remote-secret-{target}", ISTIO_NAMESPACE)
    reader = CoreV1Api(client_for(base64.b64decode(secret.data[target]).decode()))
    cacerts = reader.read_namespaced_secret("cacerts", ISTIO_NAMESPACE)
    assert "PRIVATE KEY" in base64.b64decode(cacerts.data["ca-key.pem"]).decode()
