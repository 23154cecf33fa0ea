"""The merged admin kubeconfig: one context per cluster, named after the cluster."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml


def merge_kubeconfigs(kubeconfigs: Mapping[str, str]) -> str:
    """Merge per-cluster kubeconfigs (each with one cluster and user) so that
    `kubectl --context <cluster name>` works; the first cluster is the current context."""
    merged: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [],
        "users": [],
        "contexts": [],
        "current-context": next(iter(kubeconfigs), ""),
        "preferences": {},
    }
    for name, text in kubeconfigs.items():
        document = yaml.safe_load(text)
        merged["clusters"].append({"name": name, "cluster": document["clusters"][0]["cluster"]})
        merged["users"].append({"name": f"{name}-admin", "user": document["users"][0]["user"]})
        merged["contexts"].append(
            {"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}
        )
    return yaml.safe_dump(merged, sort_keys=False)
