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
        document = yaml.safe_load(text or "") or {}
        cluster = (document.get("clusters") or [{}])[0].get("cluster", {})
        user = (document.get("users") or [{}])[0].get("user", {})
        merged["clusters"].append({"name": name, "cluster": cluster})
        merged["users"].append({"name": f"{name}-admin", "user": user})
        merged["contexts"].append(
            {"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}
        )
    return yaml.safe_dump(merged, sort_keys=False)
