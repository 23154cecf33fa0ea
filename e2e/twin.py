"""A local twin of `pulumi up` and `pulumi destroy`.

The real program (__main__.py with a stack's config) runs under the Pulumi SDK's mock runtime. The
mocks do what the engine and providers would: every Kubernetes resource is server-side applied to
the real API server its provider's kubeconfig names, and awaited like pulumi-kubernetes awaits it;
every Helm release is a real `helm upgrade --install`; Exoscale is a fake backed by the local
control planes; TLS resources are real keys and certificates. A state of every resource's inputs
and outputs is kept between runs, so a second run updates, replaces or deletes only what changed,
by the engine's options and the providers' replace rules (testing/engine.py, shared with the
offline suite's second-`up` replay), and `destroy` deletes in reverse dependency order.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from kubernetes import config as kube_config
from kubernetes.client import ApiClient
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError
from pulumi.runtime import mocks as pulumi_mocks

from e2e.controlplane import BIN, ControlPlane
from e2e.fake_exoscale import FakeExoscale
from testing import engine
from testing.mocks import MeshMocks, unwrap
from testing.program import STACK_REFERENCE, run_main, stack_reference_outputs

PROVIDER_TYPE = "pulumi:providers:kubernetes"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
FIELD_MANAGER = "pulumi-kubernetes"
DEFAULT_AWAIT_SECONDS = 600  # pulumi-kubernetes' default create/update timeout: 10 minutes
POLL_SECONDS = 0.5


@dataclass
class StateEntry:
    """One resource as the engine's state file would hold it."""

    urn: str
    type: str
    id: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    provider_urn: str
    # `urn::id` of the provider: a replaced provider has a new id.
    provider_ref: str
    dependencies: set[str]
    parent: str
    custom: bool
    ignore_changes: tuple[str, ...] = ()
    replace_on_changes: tuple[str, ...] = ()
    delete_before_replace: bool = False


@dataclass
class RunReport:
    """What one `up` did, for assertions and timing."""

    outputs: dict[str, Any]
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # Kubernetes resources: (type, name, seconds of apply plus await).
    resource_seconds: list[tuple[str, str, float]] = field(default_factory=list)


class ProgramFailedError(RuntimeError):
    pass


def _timeout_seconds(value: str) -> float:
    """Pulumi's customTimeouts strings, e.g. `15m`, `90s`, `1h`."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh])", value or "")
    if not match:
        return DEFAULT_AWAIT_SECONDS
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]


class KubernetesCluster:
    """A provider's view of one API server: server-side apply, await, delete."""

    def __init__(self, kubeconfig_text: str, workdir: Path) -> None:
        identity = hashlib.sha256(kubeconfig_text.encode()).hexdigest()[:12]
        self.kubeconfig_path = workdir / f"provider-{identity}.kubeconfig"
        self.kubeconfig_path.write_text(kubeconfig_text)
        self.kubeconfig_path.chmod(0o600)
        self.api = kube_config.new_client_from_config_dict(yaml.safe_load(kubeconfig_text))
        # A discovery cache of its own: the client's default file is shared by every client of a host.
        self.dynamic = DynamicClient(self.api, cache_file=str(workdir / f"discovery-{identity}-{id(self)}.json"))
        self.server = yaml.safe_load(kubeconfig_text)["clusters"][0]["cluster"]["server"]
        self._lock = threading.Lock()

    def resource(self, api_version: str, kind: str) -> Any:
        with self._lock:  # discovery is cached and not thread-safe
            return self.dynamic.resources.get(api_version=api_version, kind=kind)

    def apply(self, manifest: dict[str, Any], timeout: float) -> dict[str, Any]:
        resource = self.resource(manifest["apiVersion"], manifest["kind"])
        namespace = manifest["metadata"].get("namespace") or ("default" if resource.namespaced else None)
        if resource.namespaced:
            manifest = {**manifest, "metadata": {**manifest["metadata"], "namespace": namespace}}
        live = resource.server_side_apply(
            body=manifest, name=manifest["metadata"]["name"], namespace=namespace,
            field_manager=FIELD_MANAGER, force_conflicts=True,
        ).to_dict()
        return self.await_ready(resource, live, timeout)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        try:
            return self.resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None

    def await_ready(self, resource: Any, live: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Await like pulumi-kubernetes (provider/pkg/await/awaiters.go): Deployments available,
        Jobs complete, Services with ready endpoints and, for LoadBalancers, an ingress address,
        service-account-token Secrets filled."""
        metadata = live["metadata"]
        deadline = time.monotonic() + timeout
        while True:
            problem = self._not_ready(live)
            if problem is None:
                return live
            if problem.startswith("failed:"):
                raise ProgramFailedError(f"{live['kind']} {metadata.get('namespace', '')}/{metadata['name']} {problem}")
            if time.monotonic() > deadline:
                raise ProgramFailedError(f"{live['kind']} {metadata.get('namespace', '')}/{metadata['name']} not ready "
                                    f"after {timeout:.0f} s: {problem}")
            time.sleep(POLL_SECONDS)
            live = resource.get(name=metadata["name"], namespace=metadata.get("namespace")).to_dict()

    def _not_ready(self, live: dict[str, Any]) -> str | None:
        kind, spec, status = live["kind"], live.get("spec") or {}, live.get("status") or {}
        if kind == "Deployment":
            wanted = spec.get("replicas", 1)
            if status.get("observedGeneration", 0) < live["metadata"].get("generation", 0):
                return "rollout not observed yet"
            if status.get("availableReplicas", 0) < wanted or status.get("updatedReplicas", 0) < wanted:
                return f"{status.get('availableReplicas', 0)}/{wanted} replicas available"
        elif kind == "Job":
            conditions = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
            if "Failed" in conditions:
                return f"failed: {conditions['Failed'].get('message', '')}"
            if "Complete" not in conditions:
                return "not complete"
        elif kind == "Service":
            if spec.get("type") == "LoadBalancer" and not (status.get("loadBalancer") or {}).get("ingress"):
                return "no load balancer ingress yet"
            if spec.get("selector") and not self._has_ready_endpoints(live):
                return "no ready endpoints"
        elif (kind == "Secret" and live.get("type") == "kubernetes.io/service-account-token"
              and not (live.get("data") or {}).get("token")):
            return "token not filled in yet"
        return None

    def _has_ready_endpoints(self, service: dict[str, Any]) -> bool:
        endpoints = self.get("v1", "Endpoints", service["metadata"]["name"], service["metadata"]["namespace"])
        return any(subset.get("addresses") for subset in (endpoints or {}).get("subsets") or [])

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None, timeout: float = 300) -> None:
        resource = self.resource(api_version, kind)
        try:
            resource.delete(name=name, namespace=namespace, body={"propagationPolicy": "Foreground"})
        except NotFoundError:
            return
        deadline = time.monotonic() + timeout
        while self.get(api_version, kind, name, namespace) is not None:
            if time.monotonic() > deadline:
                raise ProgramFailedError(f"{kind} {namespace or ''}/{name} still exists {timeout:.0f} s after delete")
            time.sleep(POLL_SECONDS)


class Helm:
    """Real Helm against one cluster, with its cache and config kept in the run's folder."""

    def __init__(self, workdir: Path) -> None:
        self.env = {**os.environ, "HELM_CACHE_HOME": str(workdir / "helm" / "cache"),
                    "HELM_CONFIG_HOME": str(workdir / "helm" / "config"),
                    "HELM_DATA_HOME": str(workdir / "helm" / "data")}
        self.workdir = workdir

    def run(self, cluster: KubernetesCluster, *args: str) -> str:
        return self.run_with(cluster.kubeconfig_path, *args)

    def run_with(self, kubeconfig_path: Path, *args: str) -> str:
        result = subprocess.run([str(BIN / "helm"), "--kubeconfig", str(kubeconfig_path), *args],
                                capture_output=True, text=True, env=self.env, check=False)
        if result.returncode != 0:
            raise ProgramFailedError(f"helm {' '.join(args[:2])} failed: {result.stderr.strip()}")
        return result.stdout

    def upgrade_install(self, cluster: KubernetesCluster, inputs: dict[str, Any]) -> dict[str, Any]:
        """What pulumi-kubernetes' helm.v3.Release does on create and update (helm_release.go)."""
        name, namespace = inputs["name"], inputs.get("namespace") or "default"
        values_file = self.workdir / f"values-{cluster.server.rsplit(':', 1)[1]}-{name}.json"
        values_file.write_text(json.dumps(inputs.get("values") or {}))
        args = ["upgrade", name, inputs["chart"], "--install", "--namespace", namespace,
                "--values", str(values_file), "--timeout", f"{int(inputs.get('timeout') or 300)}s"]
        if (inputs.get("repositoryOpts") or {}).get("repo"):
            args += ["--repo", inputs["repositoryOpts"]["repo"]]
        if inputs.get("version"):
            args += ["--version", inputs["version"]]
        if not inputs.get("skipAwait"):
            args.append("--wait")
        if inputs.get("waitForJobs"):
            args.append("--wait-for-jobs")
        if inputs.get("atomic"):
            args.append("--atomic")
        if inputs.get("cleanupOnFail"):
            args.append("--cleanup-on-fail")
        if inputs.get("createNamespace"):
            args.append("--create-namespace")
        if inputs.get("maxHistory"):
            args += ["--history-max", str(int(inputs["maxHistory"]))]
        self.run(cluster, *args)
        return self.status(cluster, name, namespace)

    def status(self, cluster: KubernetesCluster, name: str, namespace: str) -> dict[str, Any]:
        info = json.loads(self.run(cluster, "status", name, "--namespace", namespace, "--output", "json"))
        chart = info["chart"]["metadata"] if "chart" in info else {}
        return {"name": info["name"], "namespace": info["namespace"], "revision": info["version"],
                "status": info["info"]["status"], "chart": chart.get("name"), "version": chart.get("version"),
                "appVersion": chart.get("appVersion")}

    def uninstall(self, cluster: KubernetesCluster, name: str, namespace: str) -> None:
        self.run(cluster, "uninstall", name, "--namespace", namespace, "--wait", "--timeout", "300s")


def _manifest(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The object pulumi-kubernetes sends: the resource's inputs without nulls."""
    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(dict(inputs))


class Twin:
    """The engine side: state, providers, and what each resource type does on create, update
    and delete. One Twin spans several `up`s and one `destroy`."""

    def __init__(self, workdir: Path, cloud: FakeExoscale, stack: str = "dev") -> None:
        self.workdir = workdir
        self.cloud = cloud
        self.stack = stack
        self.state: dict[str, StateEntry] = {}
        self.clusters: dict[str, KubernetesCluster] = {}  # provider URN -> cluster
        self.helm = Helm(workdir)
        self.tls = MeshMocks()
        # The last successful up's exports: what the program's StackReference to its own stack reads.
        self.outputs: dict[str, Any] = {}
        self._lock = threading.Lock()
        # Engine order: URNs as they finished, and how many had finished when each one started.
        self.completion_order: list[str] = []
        self.started_after: dict[str, int] = {}

    # Running the program -----------------------------------------------------------------
    def up(self, config: Mapping[str, Any]) -> RunReport:
        report = RunReport(outputs={})
        monitor = _TwinMonitor(self, report)
        started = time.monotonic()
        contextvars.Context().run(self._run_program, monitor, dict(config))
        if monitor.errors:
            raise ProgramFailedError("the program failed:\n" + "\n".join(monitor.errors))
        # A failed up leaves the last deployment's outputs, as the engine does.
        self.outputs = monitor.exported
        # Resources the program no longer declares are deleted, dependents first.
        stale = [urn for urn in self.state if urn not in monitor.registered]
        for entry in self._reverse_dependency_order(stale):
            self._delete(entry)
            report.deleted.append(entry.urn)
        for old in monitor.replaced_later:
            self._delete(old)
        report.seconds = time.monotonic() - started
        return report

    def _run_program(self, monitor: _TwinMonitor, config: dict[str, Any]) -> None:
        try:
            outputs = run_main(monitor, config, self.stack)
            monitor.report.outputs = {key: unwrap(output.value) for key, output in outputs.items()}
            monitor.exported = dict(outputs)
        except Exception as error:  # noqa: BLE001 - reported with the registration errors
            monitor.errors.append(f"{type(error).__name__}: {error}")

    # Engine steps ------------------------------------------------------------------------
    def register(self, entry: StateEntry, timeout: float, report: RunReport) -> tuple[StateEntry | None, str]:
        """Create, update or replace one resource; returns the entry to delete after the run
        (create-before-delete replacement) and what happened."""
        old = self.state.get(entry.urn)
        step = engine.CREATE
        if old is not None:
            entry.inputs = engine.apply_ignore_changes(old.inputs, entry.inputs, entry.ignore_changes)
            provider = self.state.get(entry.provider_urn)
            step = engine.next_step(entry.type, old.inputs, entry.inputs, entry.replace_on_changes,
                                    provider_replaced=old.provider_ref != entry.provider_ref,
                                    provider_inputs=provider.inputs if provider else None)
        if old is not None and step == engine.SAME:
            entry.id, entry.outputs = old.id, old.outputs
            self.state[entry.urn] = entry
            return None, "same"
        started = time.monotonic()
        with self._lock:
            self.started_after[entry.urn] = len(self.completion_order)
        delete_later: StateEntry | None = None
        if old is None:
            self._create(entry, timeout)
            action = "create"
        elif step == engine.REPLACE:
            if self._delete_before_replace(old, entry):
                self._delete(old)
            else:
                delete_later = old
            self._create(entry, timeout)
            action = "replace"
        else:
            self._update(old, entry, timeout)
            action = "update"
        if entry.type.startswith("kubernetes:"):
            with self._lock:
                report.resource_seconds.append((entry.type, entry.urn.rsplit("::", 1)[1], time.monotonic() - started))
        self.state[entry.urn] = entry
        with self._lock:
            self.completion_order.append(entry.urn)
        return delete_later, action

    def dependency_urns(self, entry: StateEntry) -> set[str]:
        """The custom resources `entry` waits for: its dependencies (a component stands for every
        resource beneath it) and its provider."""
        urns: set[str] = set()
        pending = [*entry.dependencies, entry.provider_urn]
        while pending:
            urn = pending.pop()
            dependency = self.state.get(urn)
            if dependency is None:
                continue
            if dependency.custom:
                urns.add(urn)
            else:
                pending.extend(e.urn for e in self.state.values() if e.parent == urn)
        return urns

    def admin_cluster(self, control_plane: ControlPlane) -> KubernetesCluster:
        return KubernetesCluster(control_plane.admin_kubeconfig_path().read_text(), self.workdir)

    def helm_list(self, kubeconfig_path: Path) -> list[dict[str, Any]]:
        return json.loads(self.helm.run_with(kubeconfig_path, "list", "--all-namespaces", "--all", "--output", "json"))

    def cluster_of(self, entry: StateEntry) -> KubernetesCluster:
        """The API server a Kubernetes resource's provider names."""
        if not entry.provider_urn or entry.provider_urn not in self.clusters:
            raise ProgramFailedError(f"{entry.urn} has no explicit Kubernetes provider")
        return self.clusters[entry.provider_urn]

    def _create(self, entry: StateEntry, timeout: float) -> None:
        inputs = entry.inputs
        if entry.type == PROVIDER_TYPE:
            self.clusters[entry.urn] = KubernetesCluster(inputs["kubeconfig"], self.workdir)
            entry.id, entry.outputs = entry.urn.rsplit("::", 1)[1], dict(inputs)
        elif entry.type == HELM_RELEASE:
            status = self.helm.upgrade_install(self.cluster_of(entry), inputs)
            entry.id, entry.outputs = f"{status['namespace']}/{status['name']}", {**inputs, "status": status}
        elif entry.type.startswith("kubernetes:"):
            live = self.cluster_of(entry).apply(_manifest(inputs), timeout)
            metadata = live["metadata"]
            entry.id = f"{metadata.get('namespace', '')}/{metadata['name']}".lstrip("/")
            entry.outputs = live
        elif entry.type.startswith("exoscale:"):
            entry.id, entry.outputs = self.cloud.create(entry.type, entry.urn, inputs)
        elif entry.type.startswith("tls:"):
            args = pulumi.runtime.MockResourceArgs(entry.type, entry.urn.rsplit("::", 1)[1], inputs, "", "")
            entry.id, entry.outputs = self.tls.new_resource(args)
        else:  # components
            entry.id, entry.outputs = "", dict(inputs)

    @staticmethod
    def _delete_before_replace(old: StateEntry, new: StateEntry) -> bool:
        """The `delete_before_replace` option, or a replaced object that keeps its name
        (pulumi-kubernetes' Diff)."""
        if new.delete_before_replace:
            return True
        if not new.type.startswith("kubernetes:") or new.type == HELM_RELEASE:
            return False
        old_meta, new_meta = old.inputs.get("metadata") or {}, new.inputs.get("metadata") or {}
        return (old_meta.get("name"), old_meta.get("namespace")) == (new_meta.get("name"), new_meta.get("namespace"))

    def _update(self, old: StateEntry, entry: StateEntry, timeout: float) -> None:
        if entry.type == PROVIDER_TYPE or entry.type.startswith("kubernetes:"):
            # A new client, a server-side apply and a `helm upgrade` are all updates in place.
            self._create(entry, timeout)
            if entry.type != HELM_RELEASE:
                entry.id = old.id
        else:
            entry.id, entry.outputs = old.id, {**old.outputs, **entry.inputs}

    def _delete(self, entry: StateEntry) -> None:
        if entry.type == PROVIDER_TYPE or not entry.custom:
            return
        if entry.type == HELM_RELEASE:
            status = entry.outputs["status"]
            self.helm.uninstall(self.cluster_of(entry), status["name"], status["namespace"])
        elif entry.type.startswith("kubernetes:"):
            metadata = entry.outputs["metadata"]
            self.cluster_of(entry).delete(entry.outputs["apiVersion"], entry.outputs["kind"], metadata["name"],
                                        metadata.get("namespace"))
        elif entry.type.startswith("exoscale:"):
            self.cloud.delete(entry.type, entry.id)
        if self.state.get(entry.urn) is entry:
            del self.state[entry.urn]

    def destroy(self) -> list[str]:
        """`pulumi destroy`: every resource, dependents before what they depend on."""
        order = self._reverse_dependency_order(list(self.state))
        for entry in order:
            self._delete(entry)
        self.state.clear()
        return [entry.urn for entry in order]

    def _reverse_dependency_order(self, urns: Iterable[str]) -> list[StateEntry]:
        """Dependents first: a resource goes before its dependencies, provider and parent."""
        chosen = {urn: self.state[urn] for urn in urns}
        remaining = dict(chosen)
        order: list[StateEntry] = []
        while remaining:
            needed = {dep for e in remaining.values() for dep in self._edges(e)}
            ready = [e for urn, e in remaining.items() if urn not in needed]
            if not ready:
                raise ProgramFailedError(f"dependency cycle among {sorted(remaining)}")
            for entry in sorted(ready, key=lambda e: e.urn):
                order.append(entry)
                del remaining[entry.urn]
        return order

    def _edges(self, entry: StateEntry) -> set[str]:
        return {d for d in (*entry.dependencies, entry.provider_urn, entry.parent) if d and d in self.state}


class _TwinMocks(pulumi.runtime.Mocks):
    def __init__(self, monitor: _TwinMonitor) -> None:
        self.monitor = monitor

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        raise ProgramFailedError(f"the program calls {args.token}, which the twin does not serve")

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if args.typ == STACK_REFERENCE:  # a read, not a registration: the stack's last deployment
            return args.resource_id, {"name": args.resource_id,
                                      **stack_reference_outputs(self.monitor.twin.outputs)}
        return self.monitor.new_resource(args)


class _TwinMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, handing each registration with its options to the Twin."""

    def __init__(self, twin: Twin, report: RunReport) -> None:
        super().__init__(_TwinMocks(self))
        self.twin = twin
        self.report = report
        self.registered: set[str] = set()
        self.replaced_later: list[StateEntry] = []
        self.errors: list[str] = []
        self.exported: dict[str, Any] = {}
        self._request = threading.local()

    def RegisterResource(self, request: Any) -> Any:
        self._request.value = request
        return super().RegisterResource(request)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        request = self._request.value
        urn = self.make_urn(request.parent, request.type, request.name)
        dependencies = set(request.dependencies)
        for deps in request.propertyDependencies.values():
            dependencies.update(deps.urns)
        entry = StateEntry(
            urn=urn, type=request.type, id="", inputs=unwrap(args.inputs), outputs={},
            provider_urn=request.provider.rsplit("::", 1)[0] if request.provider else "",
            provider_ref=request.provider,
            dependencies=dependencies, parent=request.parent, custom=bool(request.custom),
            ignore_changes=tuple(request.ignoreChanges), replace_on_changes=tuple(request.replaceOnChanges),
            delete_before_replace=bool(request.deleteBeforeReplace),
        )
        self.registered.add(urn)
        try:
            delete_later, action = self.twin.register(entry, _timeout_seconds(request.customTimeouts.create),
                                                      self.report)
        except Exception as error:
            self.errors.append(f"{urn}: {error}")
            raise
        if delete_later is not None:
            self.replaced_later.append(delete_later)
        if action != "same":
            getattr(self.report, {"create": "created", "update": "updated", "replace": "replaced"}[action]).append(urn)
        return entry.id, entry.outputs


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


def client_for(kubeconfig_text: str) -> ApiClient:
    return kube_config.new_client_from_config_dict(yaml.safe_load(kubeconfig_text))
