"""`pulumi destroy`: reverse dependency order, nothing of the program left, and the cloud's
resources deleted in the order Exoscale needs."""

from __future__ import annotations

import yaml

from e2e.conftest import PHASES, Mesh
from e2e.kube import helm, helm_list
from e2e.snapshots import LiveObject, admin_views, program_objects

HELM_KEEP = ("helm.sh/resource-policy", "keep")


def helm_objects(mesh: Mesh) -> tuple[list[LiveObject], list[LiveObject]]:
    """Every object of every release, and those Helm keeps on uninstall by the chart's own choice
    (`helm.sh/resource-policy: keep`: Istio's CRDs, which go with the cluster itself)."""
    found, kept = [], []
    for name, control_plane in mesh.control_planes.items():
        for release in helm_list(control_plane.admin_kubeconfig_path(), mesh.workdir):
            manifest = helm(control_plane.admin_kubeconfig_path(), mesh.workdir, "get", "manifest",
                            release["name"], "--namespace", release["namespace"])
            for doc in yaml.safe_load_all(manifest):
                if doc:
                    namespace = doc["metadata"].get("namespace") or (
                        release["namespace"] if doc["kind"] not in CLUSTER_SCOPED else "")
                    obj = LiveObject(name, doc["apiVersion"], doc["kind"], namespace, doc["metadata"]["name"])
                    found.append(obj)
                    annotations = doc["metadata"].get("annotations") or {}
                    if annotations.get(HELM_KEEP[0]) == HELM_KEEP[1]:
                        kept.append(obj)
    return found, kept


CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "MutatingWebhookConfiguration",
                  "ValidatingWebhookConfiguration", "Namespace"}


def test_destroy_leaves_no_object_and_deletes_nlbs_before_nodepools_before_clusters(mesh: Mesh):
    """Seen failing: without the east-west NLB's `depends_on=[nodepool]` (components/cluster.py) the
    parallel destroy deleted cluster3's NLB after its nodepool."""
    if stop := mesh.extra.get("stop_istiods"):
        stop()  # istiod writes ConfigMaps into every namespace; a running one would race the deletes
    released, kept = helm_objects(mesh)
    objects = [*program_objects(mesh).values(), *released]
    assert len(objects) > 50 and kept
    # The engine's default parallelism: independent deletes run at once, so a missing dependency
    # edge shows up as a refused or out-of-order delete below.
    report = mesh.engine.destroy()
    PHASES.add("teardown_seconds", report.seconds)
    # `discard`: the StackReference to the stack's own last deployment is only read, never deleted.
    assert set(report.summary) <= {"delete", "discard"} and report.summary.get("delete"), report.summary
    assert mesh.engine.resources() == [], "the engine's state still holds resources"

    admin = admin_views(mesh)
    left = [o for o in objects if admin[o.cluster].get(o.api_version, o.kind, o.name, o.namespace or None)]
    assert sorted(left, key=repr) == sorted(kept, key=repr), [o for o in left if o not in kept]
    for name, control_plane in mesh.control_planes.items():
        assert helm_list(control_plane.admin_kubeconfig_path(), mesh.workdir) == [], name

    events = mesh.cloud.events
    deleted_at = {e.id: e.at for e in events if e.action == "delete"}
    created = {e.id: e.kind for e in events if e.action == "create"}
    assert set(deleted_at) == set(created), "the fake cloud still holds resources"
    assert not mesh.cloud.nlbs and not mesh.cloud.nodepools
    pools = mesh.cloud.deleted_nodepools
    for nlb in mesh.cloud.deleted_nlbs.values():
        targeted = [p for p in pools.values() if p.instance_pool_id in nlb.targeted_pools]
        assert targeted or nlb.name.endswith("ingress"), nlb.name
        for pool in targeted:
            assert deleted_at[nlb.id] < deleted_at[pool.id], f"{nlb.name} deleted after its nodepool"
    for pool in pools.values():
        assert deleted_at[pool.id] < deleted_at[pool.cluster_id], f"nodepool {pool.id} deleted after its cluster"
