"""Reading the local clusters back: API clients, Helm's view, polling."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes import config as kube_config
from kubernetes.client import ApiClient
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from e2e.controlplane import BIN

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
KUBERNETES_PROVIDER = "pulumi:providers:kubernetes"
POLL_SECONDS = 0.5


def client_for(kubeconfig_text: str) -> ApiClient:
    return kube_config.new_client_from_config_dict(yaml.safe_load(kubeconfig_text))


def decoded_secret(live: Mapping[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (live.get("data") or {}).items()}


def run_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout:.0f} s")
        time.sleep(POLL_SECONDS)


class AdminView:
    """Generic reads of one API server with its admin kubeconfig."""

    def __init__(self, kubeconfig_path: Path, cache_dir: Path) -> None:
        api = kube_config.new_client_from_config(str(kubeconfig_path))
        # A discovery cache of its own: the client's default file is shared by every client of a host.
        self.dynamic = DynamicClient(api, cache_file=str(cache_dir / f"discovery-{id(self)}.json"))
        self._lock = threading.Lock()

    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        with self._lock:  # discovery is cached and not thread-safe
            resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
        try:
            return resource.get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None


def helm(kubeconfig_path: Path, workdir: Path, *args: str) -> str:
    """Real Helm, reading what pulumi-kubernetes' Helm releases left in the cluster."""
    env = {**os.environ, "HELM_CACHE_HOME": str(workdir / "helm" / "cache"),
           "HELM_CONFIG_HOME": str(workdir / "helm" / "config"), "HELM_DATA_HOME": str(workdir / "helm" / "data")}
    result = subprocess.run([str(BIN / "helm"), "--kubeconfig", str(kubeconfig_path), *args],
                            capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout


def helm_list(kubeconfig_path: Path, workdir: Path) -> list[dict[str, Any]]:
    return json.loads(helm(kubeconfig_path, workdir, "list", "--all-namespaces", "--all", "--output", "json"))
