"""What the program left in the API servers, to compare before and after a run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml

from e2e.conftest import Mesh
from e2e.kube import HELM_RELEASE, KUBERNETES_PROVIDER, AdminView, helm_list


@dataclass(frozen=True)
class LiveObject:
    cluster: str
    api_version: str
    kind: str
    namespace: str
    name: str


def provider_clusters(mesh: Mesh, resources: list[dict[str, Any]]) -> dict[str, str]:
    """Provider reference (urn::id) -> the cluster whose API server its kubeconfig names."""
    by_endpoint = {cp.endpoint: name for name, cp in mesh.control_planes.items()}
    found = {}
    for resource in resources:
        if resource["type"] == KUBERNETES_PROVIDER and resource.get("inputs", {}).get("kubeconfig"):
            kubeconfig = resource["inputs"]["kubeconfig"]
            if isinstance(kubeconfig, dict) and "plaintext" in kubeconfig:
                # A secret, as `pulumi stack export --show-secrets` prints it: its value JSON-encoded.
                kubeconfig = json.loads(kubeconfig["plaintext"])
            parsed = yaml.safe_load(kubeconfig)
            server = parsed["clusters"][0]["cluster"]["server"]
            found[f"{resource['urn']}::{resource['id']}"] = by_endpoint[server]
    return found


def program_objects(mesh: Mesh) -> dict[str, LiveObject]:
    """URN -> the object each of the program's Kubernetes resources manages, from the engine's state."""
    resources = mesh.engine.resources()
    clusters = provider_clusters(mesh, resources)
    found = {}
    for resource in resources:
        if (not resource["type"].startswith("kubernetes:") or resource["type"] == HELM_RELEASE
                or not resource.get("custom")):
            continue
        outputs = resource["outputs"]
        metadata = outputs["metadata"]
        found[resource["urn"]] = LiveObject(clusters[resource["provider"]], outputs["apiVersion"], outputs["kind"],
                                            metadata.get("namespace", ""), metadata["name"])
    return found


def admin_views(mesh: Mesh) -> dict[str, AdminView]:
    return {name: AdminView(cp.admin_kubeconfig_path(), mesh.workdir) for name, cp in mesh.control_planes.items()}


def versions(mesh: Mesh) -> dict[str, tuple[str, str] | None]:
    """URN -> (uid, resourceVersion) of each program object as the API server has it now."""
    views = admin_views(mesh)
    result: dict[str, tuple[str, str] | None] = {}
    for urn, obj in program_objects(mesh).items():
        live = views[obj.cluster].get(obj.api_version, obj.kind, obj.name, obj.namespace or None)
        result[urn] = (live["metadata"]["uid"], live["metadata"]["resourceVersion"]) if live else None
    return result


def helm_revisions(mesh: Mesh) -> dict[tuple[str, str], int]:
    """(cluster, release) -> revision."""
    return {(name, release["name"]): int(release["revision"])
            for name, control_plane in mesh.control_planes.items()
            for release in helm_list(control_plane.admin_kubeconfig_path(), mesh.workdir)}
