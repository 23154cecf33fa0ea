"""A real istiod (pilot-discovery) per cluster, configured as the istiod chart configures it in a
pod, from what the program put into that cluster's API server: the rendered Deployment's args and
env, the `istio` ConfigMap's mesh config, the `cacerts` Secret as its plugged-in CA directory, and
a token of the chart's `istiod` service account (so the chart's RBAC is what istiod gets).

See ../shared/reference/local-control-planes.md §5 for running pilot-discovery out of cluster.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import AppsV1Api, CoreV1Api

from e2e.controlplane import BIN, ControlPlane, free_port, spawn
from e2e.fake_exoscale import admin_api

ISTIO_NAMESPACE = "istio-system"
ISTIO_MODULE = Path(__file__).resolve().parent / "tools" / "istio" / "go.mod"
# Values of fieldRef/resourceFieldRef env that a pod would get from the kubelet.
POD_FIELDS = {"metadata.name": "istiod-e2e", "metadata.namespace": ISTIO_NAMESPACE,
              "spec.serviceAccountName": "istiod", "status.podIP": "127.0.0.1"}


def istio_module_version() -> str:
    match = re.search(r"istio\.io/istio (\S+)", ISTIO_MODULE.read_text())
    return match[1] if match else "unknown"


def _pod_env(container: Any) -> dict[str, str]:
    env: dict[str, str] = {}
    for variable in container.env or []:
        if variable.value is not None:
            env[variable.name] = variable.value
        elif variable.value_from and variable.value_from.field_ref:
            env[variable.name] = POD_FIELDS.get(variable.value_from.field_ref.field_path, "")
        # resourceFieldRef (GOMEMLIMIT, GOMAXPROCS) are left to Go's defaults.
    return env


@dataclass
class Istiod:
    cluster: str
    control_plane: ControlPlane
    workdir: Path
    http_port: int = 0
    grpc_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        api = admin_api(self.control_plane)
        core, apps = CoreV1Api(api), AppsV1Api(api)
        deployment = apps.read_namespaced_deployment("istiod", ISTIO_NAMESPACE)
        container = next(c for c in deployment.spec.template.spec.containers if c.name == "discovery")
        # KUBECONFIG names an optional mount for an external control plane; --kubeconfig decides here.
        self.env = {k: v for k, v in _pod_env(container).items() if k != "KUBECONFIG"}
        mesh = core.read_namespaced_config_map("istio", ISTIO_NAMESPACE).data
        config_dir = self.workdir / "etc" / "istio" / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "mesh").write_text(mesh.get("mesh", ""))
        (config_dir / "meshNetworks").write_text(mesh.get("meshNetworks", "networks: {}"))
        # The plugged-in CA: the files of the `cacerts` Secret, where the pod would mount them.
        cacerts = self.workdir / "etc" / "cacerts"
        cacerts.mkdir(parents=True, exist_ok=True)
        for name, value in core.read_namespaced_secret("cacerts", ISTIO_NAMESPACE).data.items():
            (cacerts / name).write_bytes(base64.b64decode(value))
        kubeconfig = self.workdir / "istiod.kubeconfig"
        kubeconfig.write_text(self._service_account_kubeconfig(core))
        kubeconfig.chmod(0o600)

        self.http_port, self.grpc_port = free_port(), free_port()
        chart_args = [a for a in container.args or [] if not a.startswith("--monitoringAddr")]
        self.process = spawn(
            [str(BIN / "pilot-discovery"), *chart_args, f"--kubeconfig={kubeconfig}",
             f"--httpAddr=127.0.0.1:{self.http_port}", f"--grpcAddr=127.0.0.1:{self.grpc_port}",
             f"--secureGRPCAddr=127.0.0.1:{free_port()}", f"--httpsAddr=127.0.0.1:{free_port()}",
             f"--monitoringAddr=127.0.0.1:{free_port()}", f"--ctrlz_port={free_port()}"],
            self.workdir / "istiod.log", cwd=self.workdir, env={**os.environ, **self.env},
        )
        self._wait_ready()

    def _service_account_kubeconfig(self, core: CoreV1Api) -> str:
        token = core.create_namespaced_service_account_token(
            "istiod", ISTIO_NAMESPACE, {"spec": {"expirationSeconds": 3600 * 6}}).status.token
        return yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": self.cluster, "cluster": {
                "server": self.control_plane.endpoint,
                "certificate-authority-data": base64.b64encode(self.control_plane.ca.cert_pem.encode()).decode()}}],
            "users": [{"name": "istiod", "user": {"token": token}}],
            "contexts": [{"name": self.cluster, "context": {"cluster": self.cluster, "user": "istiod"}}],
            "current-context": self.cluster,
        })

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/ready", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"istiod of {self.cluster} not ready after {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.5)

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"istiod of {self.cluster} exited with {self.process.returncode}: {self.log_tail()}")

    def log_tail(self, characters: int = 3000) -> str:
        return (self.workdir / "istiod.log").read_text(errors="replace")[-characters:]

    def log(self) -> str:
        return (self.workdir / "istiod.log").read_text(errors="replace")

    def debug(self, view: str) -> Any:
        """One of istiod's debug views (pilot/pkg/xds/debug.go), as JSON."""
        self.check_alive()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/debug/{view}", timeout=10) as response:
            return json.loads(response.read() or b"null")

    def eds(self, cluster_id: str, network: str, namespace: str, envoy_cluster: str,
            timeout: float = 20) -> list[dict[str, Any]]:
        """The endpoints istiod sends a sidecar of `cluster_id`/`network` for `envoy_cluster`."""
        result = subprocess.run(
            [str(BIN / "xds-probe"), f"--xds=127.0.0.1:{self.grpc_port}", f"--cluster-id={cluster_id}",
             f"--network={network}", f"--namespace={namespace}", f"--eds-cluster={envoy_cluster}",
             f"--timeout={int(timeout)}s"],
            capture_output=True, text=True, check=False, timeout=timeout + 30,
        )
        if result.returncode != 0:
            raise AssertionError(f"xds-probe against istiod of {self.cluster}: {result.stderr.strip()[-2000:]}")
        return json.loads(result.stdout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
