"""What the program left in the API servers, to compare before and after a run."""

from __future__ import annotations

from dataclasses import dataclass

from e2e.conftest import Mesh
from e2e.twin import HELM_RELEASE


@dataclass(frozen=True)
class LiveObject:
    cluster: str
    api_version: str
    kind: str
    namespace: str
    name: str


def program_objects(mesh: Mesh) -> dict[str, LiveObject]:
    """URN -> the object each of the program's Kubernetes resources manages."""
    found = {}
    for entry in mesh.twin.state.values():
        if not entry.type.startswith("kubernetes:") or entry.type == HELM_RELEASE or not entry.custom:
            continue
        metadata = entry.outputs["metadata"]
        cluster = next(name for name, cp in mesh.control_planes.items()
                       if cp.endpoint == mesh.twin.cluster_of(entry).server)
        found[entry.urn] = LiveObject(cluster, entry.outputs["apiVersion"], entry.outputs["kind"],
                                      metadata.get("namespace", ""), metadata["name"])
    return found


def versions(mesh: Mesh) -> dict[str, tuple[str, str] | None]:
    """URN -> (uid, resourceVersion) of each program object as the API server has it now."""
    result: dict[str, tuple[str, str] | None] = {}
    for urn, obj in program_objects(mesh).items():
        entry = mesh.twin.state[urn]
        live = mesh.twin.cluster_of(entry).get(obj.api_version, obj.kind, obj.name, obj.namespace or None)
        result[urn] = (live["metadata"]["uid"], live["metadata"]["resourceVersion"]) if live else None
    return result


def helm_revisions(mesh: Mesh) -> dict[tuple[str, str], int]:
    """(cluster, release) -> revision."""
    return {(name, release["name"]): int(release["revision"])
            for name, control_plane in mesh.control_planes.items()
            for release in mesh.twin.helm_list(control_plane.admin_kubeconfig_path())}
