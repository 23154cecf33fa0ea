"""Adding a third cluster: the first two keep their objects, every ordered pair joins the mesh."""

from __future__ import annotations

import base64
import itertools

from kubernetes.client import CoreV1Api

from e2e.conftest import Mesh
from e2e.fake_exoscale import admin_api
from e2e.istiod import ISTIO_NAMESPACE
from e2e.kube import run_until
from e2e.mesh_views import (
    GATEWAY_PORT,
    assert_cross_network,
    eastwest_ip,
    network_of,
    shard_endpoints,
    start_istiods,
    synced_peers,
)
from e2e.snapshots import helm_revisions, versions

THIRD = {"name": "cluster3", "zone": "ch-gva-2", "network": "network3", "serviceLevel": "starter",
         "nodepool": {"instanceType": "standard.medium", "size": 2}}
ISTIOD_HOST = "istiod.istio-system.svc.cluster.local"


def test_adding_a_cluster_leaves_the_first_two_unchanged_and_creates_remote_secrets_everywhere(mesh: Mesh):
    first_two = list(mesh.control_planes)
    before, revisions = versions(mesh), helm_revisions(mesh)
    mesh.start_control_plane(THIRD["name"])
    config = {**mesh.config, "clusters": [*mesh.config["clusters"], THIRD]}
    preview = mesh.preview(config, "add-cluster")
    # A reviewer sees only creates, plus the smoke test's re-run (its name carries the mesh's fingerprint).
    assert preview.created and not preview.updated and not preview.deleted, preview.ops
    assert preview.replaced and all("smoke-test" in urn for urn in preview.replaced), preview.replaced
    report = mesh.up(config, "third_cluster_seconds")
    assert report.created == preview.created and report.replaced == preview.replaced

    # The smoke test's name carries the mesh's fingerprint, so it runs again for the new mesh.
    rerun = {urn for urn in before if "smoke-test" in urn}
    unchanged = {urn: v for urn, v in versions(mesh).items() if urn in before and urn not in rerun}
    assert unchanged == {urn: v for urn, v in before.items() if urn not in rerun}
    assert not [urn for urn in report.replaced + report.updated + report.deleted if urn not in rerun]
    assert {k: v for k, v in helm_revisions(mesh).items() if k[0] in first_two} == revisions

    for holder in mesh.control_planes:
        core = CoreV1Api(admin_api(mesh.control_planes[holder]))
        names = {s.metadata.name for s in core.list_namespaced_secret(
            ISTIO_NAMESPACE, label_selector="istio/multiCluster=true").items}
        assert names == {f"istio-remote-secret-{peer}" for peer in mesh.control_planes if peer != holder}, holder
    new_secrets = [urn for urn in report.created if "remote-secret" in urn]
    assert len(new_secrets) == 4  # cluster3 in cluster1 and cluster2; cluster1 and cluster2 in cluster3
    core = CoreV1Api(admin_api(mesh.control_planes["cluster1"]))
    secret = core.read_namespaced_secret("istio-remote-secret-cluster3", ISTIO_NAMESPACE)
    assert mesh.control_planes["cluster3"].endpoint in base64.b64decode(secret.data["cluster3"]).decode()


def test_with_three_clusters_every_ordered_pair_is_synced_and_discovered(mesh: Mesh):
    istiods = start_istiods(mesh)
    assert len(istiods) == 3
    for holder, peer in itertools.permutations(istiods, 2):
        run_until(lambda holder=holder, peer=peer: peer in synced_peers(istiods[holder]), 60,
                  f"{holder}'s istiod: {peer} synced")
        # Every cluster runs istiod, so its Service has endpoints in every cluster: each istiod
        # holds each peer's shard, on that peer's network.
        run_until(lambda holder=holder, peer=peer: any(
            e["Network"] == network_of(mesh, peer)
            for e in shard_endpoints(istiods[holder], ISTIOD_HOST, ISTIO_NAMESPACE).get(peer, [])),
            60, f"{holder}'s istiod: istiod endpoints of {peer} on {network_of(mesh, peer)}")
        # And each istiod reaches each peer's network through that peer's own east-west NLB.
        gateway = eastwest_ip(mesh, peer)
        run_until(lambda holder=holder, peer=peer, gateway=gateway: any(
            g["Network"] == network_of(mesh, peer) and g["Addr"] == gateway and g["Port"] == GATEWAY_PORT
            for g in istiods[holder].debug("networkz") or []),
            60, f"{holder}'s istiod: {peer}'s gateway {gateway}:{GATEWAY_PORT}")
    server = mesh.config["demoServerCluster"]
    for client in istiods:
        if client != server:
            assert_cross_network(mesh, istiods, client, server)
