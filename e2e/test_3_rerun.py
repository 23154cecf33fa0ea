"""Later `pulumi up`s against the same control planes do exactly what their diff says."""

from __future__ import annotations

from typing import Any

from kubernetes.client import AppsV1Api, BatchV1Api, CoreV1Api, PolicyV1Api

from e2e.conftest import Mesh
from e2e.fake_exoscale import admin_api
from e2e.snapshots import helm_revisions, program_objects, versions
from e2e.twin import decoded_secret, run_until


def test_a_second_run_with_the_same_config_changes_nothing(mesh: Mesh):
    objects, revisions = versions(mesh), helm_revisions(mesh)
    report = mesh.up(dict(mesh.config), "rerun_seconds")
    assert (report.created, report.updated, report.replaced, report.deleted) == ([], [], [], [])
    assert versions(mesh) == objects
    assert helm_revisions(mesh) == revisions


def test_renewing_an_intermediate_ca_updates_cacerts_in_place(mesh: Mesh):
    """A new intermediate (here: a new validity) must reach istiod's mounted `cacerts` as an
    update of the same Secret, never as a delete and re-create."""
    before = versions(mesh)
    cacerts_urns = [urn for urn, o in program_objects(mesh).items() if o.name == "cacerts"]
    assert len(cacerts_urns) == len(mesh.control_planes)
    old_files = {urn: _cacerts(mesh, urn) for urn in cacerts_urns}

    config = {**mesh.config, "intermediateCaValidityHours": 17000}
    report = mesh.up(config, "renewal_seconds")

    for urn in cacerts_urns:
        assert urn in report.updated and urn not in report.replaced, urn
        uid_before, _ = before[urn]
        assert versions(mesh)[urn][0] == uid_before, f"{urn} was re-created"
        new_files = _cacerts(mesh, urn)
        assert new_files["ca-cert.pem"] != old_files[urn]["ca-cert.pem"]
        assert new_files["root-cert.pem"] == old_files[urn]["root-cert.pem"]
    assert not [urn for urn in report.replaced if "remote-secret" in urn]


def _cacerts(mesh: Mesh, urn: str) -> dict[str, str]:
    obj = program_objects(mesh)[urn]
    secret = CoreV1Api(admin_api(mesh.control_planes[obj.cluster])).read_namespaced_secret(obj.name, obj.namespace)
    return decoded_secret(secret.to_dict())


def test_two_replicas_land_on_different_nodes_and_a_drain_may_evict_only_one(mesh: Mesh):
    """Prod's availability settings on the real scheduler and disruption controller: istiod and
    the east-west gateway each run two pods on two nodes, and their PodDisruptionBudget lets a
    drain evict one of them, never both."""
    jobs_before = _smoke_test_jobs(mesh)
    report = mesh.up({**mesh.config, "istiodReplicas": 2, "eastwestGatewayReplicas": 2}, "availability_seconds")
    # The smoke test proves the gateways, so a changed gateway runs it again: a new Job, the old gone.
    assert [urn for urn in report.replaced if "smoke-test" in urn]
    jobs_after = _smoke_test_jobs(mesh)
    assert len(jobs_after) == 1 and not set(jobs_after) & set(jobs_before), (jobs_before, jobs_after)
    for name, control_plane in mesh.control_planes.items():
        api = admin_api(control_plane)
        core, apps, policy = CoreV1Api(api), AppsV1Api(api), PolicyV1Api(api)
        budgets = policy.list_namespaced_pod_disruption_budget("istio-system").items
        for deployment in ("istiod", "istio-eastwestgateway"):
            selector = apps.read_namespaced_deployment(deployment, "istio-system").spec.selector.match_labels
            label_selector = ",".join(f"{k}={v}" for k, v in selector.items())

            def settled(core: CoreV1Api = core, label_selector: str = label_selector) -> list[Any]:
                # The new template rolls the old pod out; wait until it has gone.
                pods = core.list_namespaced_pod("istio-system", label_selector=label_selector).items
                return pods if len(pods) == 2 and not any(p.metadata.deletion_timestamp for p in pods) else []

            pods = run_until(settled, 60, f"{name}: two {deployment} pods after the rollout")
            assert len({p.spec.node_name for p in pods}) == 2, (name, deployment, "both pods on one node")
            covering = [b for b in budgets
                        if all(pods[0].metadata.labels.get(k) == v for k, v in b.spec.selector.match_labels.items())]
            assert len(covering) == 1, (name, deployment, [b.metadata.name for b in budgets])
            run_until(lambda b=covering[0], policy=policy: policy.read_namespaced_pod_disruption_budget(
                b.metadata.name, "istio-system").status.disruptions_allowed == 1, 30,
                f"{name}: {deployment}'s budget allowing exactly one disruption")


def test_a_root_ca_setting_change_leaves_the_running_root_alone(mesh: Mesh):
    """istiod refuses a new root without a restart, so an edited CA setting must not replace it."""
    roots = {urn: _cacerts(mesh, urn)["root-cert.pem"]
             for urn, o in program_objects(mesh).items() if o.name == "cacerts"}
    report = mesh.up({**mesh.config, "caOrganization": "renamed-org", "rootCaValidityHours": 90000},
                     "root_settings_seconds")
    assert not [urn for urn in report.replaced if "root" in urn.rsplit("::", 1)[1]], report.replaced
    for urn, root in roots.items():
        assert _cacerts(mesh, urn)["root-cert.pem"] == root, urn
    assert report.outputs["rootCertPem"] == next(iter(roots.values()))


def _smoke_test_jobs(mesh: Mesh) -> list[str]:
    """The smoke-test Jobs in the client cluster, by name (the name carries the mesh fingerprint)."""
    client = mesh.control_planes[mesh.config["demoClientCluster"]]
    return [job.metadata.name for job in BatchV1Api(admin_api(client)).list_namespaced_job("exodemo").items]
