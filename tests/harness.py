"""Test-only helpers beside the shared runner (testing/): Kubernetes validation."""

from __future__ import annotations

from typing import Any

import kubernetes_validate

from testing.program import Registered

# SKS runs Kubernetes 1.33-1.35; validate against the middle one, strictly (unknown fields fail).
KUBERNETES_VERSION = "1.34.0"
MANIFEST_FIELDS = ("apiVersion", "kind", "metadata", "spec", "data", "stringData", "type")


def kubernetes_manifest(resource: Registered) -> dict[str, Any]:
    """The object pulumi-kubernetes would send to the API server."""
    return {k: resource.inputs[k] for k in MANIFEST_FIELDS if k in resource.inputs}


def validate_kubernetes(resource: Registered) -> None:
    kubernetes_validate.validate(kubernetes_manifest(resource), KUBERNETES_VERSION, strict=True)
