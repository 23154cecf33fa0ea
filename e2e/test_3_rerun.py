"""Later `pulumi up`s against the same control planes do exactly what their diff says."""

from __future__ import annotations

from kubernetes.client import CoreV1Api

from e2e.conftest import Mesh
from e2e.fake_exoscale import admin_api
from e2e.snapshots import helm_revisions, program_objects, versions
from e2e.twin import decoded_secret


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
