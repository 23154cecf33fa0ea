"""A real istiod (pilot-discovery) per cluster, configured as the istiod chart configures it in a
pod, from what the program put into that cluster's API server: the rendered Deployment's args and
env, the `istio` ConfigMap's mesh config, the `cacerts` Secret as its plugged-in CA directory
(kept in the kubelet's layout for a mounted Secret and updated the way the kubelet updates it),
and a token of the chart's `istiod` service account (so the chart's RBAC is what istiod gets).

Also what the cluster would ask of that istiod: sidecar injection through its webhook endpoint,
decided by the rendered MutatingWebhookConfiguration's selectors (`admitted_pod`), and workload
certificates from its CA the way an istio-agent asks for them (`workload_certificate`).

See ../shared/reference/local-control-planes.md §5 for running pilot-discovery out of cluster and
../shared/reference/istio-root-rotation.md for the cacerts layout and the CA client.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonpatch
import yaml
from kubernetes.client import AdmissionregistrationV1Api, ApiClient, AppsV1Api, CoreV1Api

from e2e.controlplane import BIN, ControlPlane, free_port, spawn
from e2e.fake_exoscale import admin_api
from e2e.kube import run_until

ISTIO_NAMESPACE = "istio-system"
ISTIO_MODULE = Path(__file__).resolve().parent / "tools" / "istio" / "go.mod"
# Values of fieldRef/resourceFieldRef env that a pod would get from the kubelet.
POD_FIELDS = {"metadata.name": "istiod-e2e", "metadata.namespace": ISTIO_NAMESPACE,
              "spec.serviceAccountName": "istiod", "status.podIP": "127.0.0.1"}
# How often the cacerts directory follows the Secret (the kubelet syncs a mounted Secret on its
# own period, up to a minute; a second keeps the e2e quick).
CACERTS_POLL_SECONDS = 1.0
# A pod's deletion cost (controller.kubernetes.io/pod-deletion-cost): the lowest goes first when a
# ReplicaSet has one pod too many.
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
CERTIFICATE_END = "-----END CERTIFICATE-----"


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
    # The webhook server (--httpsAddr, the chart's 15017) and the CA's gRPC (--secureGRPCAddr, 15012).
    https_port: int = 0
    secure_grpc_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    _cacerts_version: str = ""
    _stop_cacerts: threading.Event = field(default_factory=threading.Event)
    _cacerts_thread: threading.Thread | None = None

    @property
    def cacerts_dir(self) -> Path:
        return self.workdir / "etc" / "cacerts"

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
        # The plugged-in CA: the files of the `cacerts` Secret, where the pod would mount them, kept
        # up to date while istiod runs, as the kubelet keeps a mounted Secret.
        self.sync_cacerts(core)
        self._cacerts_thread = threading.Thread(target=self._follow_cacerts, name=f"cacerts-{self.cluster}",
                                                daemon=True)
        self._cacerts_thread.start()
        kubeconfig = self.workdir / "istiod.kubeconfig"
        kubeconfig.write_text(self._service_account_kubeconfig(core))
        kubeconfig.chmod(0o600)

        self.http_port, self.grpc_port = free_port(), free_port()
        self.https_port, self.secure_grpc_port = free_port(), free_port()
        chart_args = [a for a in container.args or [] if not a.startswith("--monitoringAddr")]
        self.process = spawn(
            [str(BIN / "pilot-discovery"), *chart_args, f"--kubeconfig={kubeconfig}",
             f"--httpAddr=127.0.0.1:{self.http_port}", f"--grpcAddr=127.0.0.1:{self.grpc_port}",
             f"--secureGRPCAddr=127.0.0.1:{self.secure_grpc_port}", f"--httpsAddr=127.0.0.1:{self.https_port}",
             f"--monitoringAddr=127.0.0.1:{free_port()}", f"--ctrlz_port={free_port()}"],
            self.workdir / "istiod.log", cwd=self.workdir, env={**os.environ, **self.env},
        )
        self._wait_ready()

    def sync_cacerts(self, core: CoreV1Api) -> bool:
        """Bring etc/cacerts up to the `cacerts` Secret, as the kubelet updates a mounted Secret
        (pkg/volume/util/atomic_writer.go): the files go into a new `..<timestamp>` directory,
        `..data_tmp` is made a symlink to it and renamed over `..data` (one atomic switch), and
        each file name is a symlink to `..data/<name>`. True when the directory changed."""
        secret = core.read_namespaced_secret("cacerts", ISTIO_NAMESPACE)
        if secret.metadata.resource_version == self._cacerts_version:
            return False
        files = {name: base64.b64decode(value) for name, value in (secret.data or {}).items()}
        directory = self.cacerts_dir
        directory.mkdir(parents=True, exist_ok=True)
        data = directory / "..data"
        previous = os.readlink(data) if data.is_symlink() else None
        stamp = directory / datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
        stamp.mkdir()
        for name, content in files.items():
            (stamp / name).write_bytes(content)
        (directory / "..data_tmp").unlink(missing_ok=True)
        os.symlink(stamp.name, directory / "..data_tmp")
        os.rename(directory / "..data_tmp", data)
        for name in files:
            if not (directory / name).is_symlink():
                os.symlink(f"..data/{name}", directory / name)
        for link in directory.iterdir():
            if link.is_symlink() and not link.name.startswith("..") and link.name not in files:
                link.unlink()
        if previous:
            shutil.rmtree(directory / previous, ignore_errors=True)
        self._cacerts_version = secret.metadata.resource_version
        return True

    def _follow_cacerts(self) -> None:
        core = CoreV1Api(admin_api(self.control_plane))
        while not self._stop_cacerts.wait(CACERTS_POLL_SECONDS):
            try:
                self.sync_cacerts(core)
            except Exception as error:  # noqa: BLE001 - a missed poll is retried; the log says why
                with (self.workdir / "cacerts-sync.log").open("a") as log:
                    log.write(f"{datetime.datetime.now(datetime.UTC).isoformat()} {error!r}\n")

    def trust_bundle(self) -> str:
        """root-cert.pem as istiod sees it now."""
        return (self.cacerts_dir / "root-cert.pem").read_text()

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

    def mesh_config(self) -> dict[str, Any]:
        """The mesh config istiod runs with (/debug/mesh: its parsed config, defaults included)."""
        return self.debug("mesh")

    def gateway_config(self, cluster_id: str, network: str, pod: Any,
                       timeout: float = 30) -> dict[str, list[dict[str, Any]]]:
        """What istiod sends a gateway pod (node type `router`) as which the probe presents itself:
        its namespace, labels and IP (the IP is only data in the node ID, never dialled). The
        listeners and routes, as Envoy's JSON ({"listeners": [...], "routes": [...]})."""
        namespace, labels = pod.metadata.namespace, pod.metadata.labels or {}
        result = subprocess.run(
            [str(BIN / "xds-probe"), f"--xds=127.0.0.1:{self.grpc_port}", "--node-type=router",
             f"--ip={pod.status.pod_ip}",
             f"--cluster-id={cluster_id}", f"--network={network}", f"--namespace={namespace}",
             f"--labels={json.dumps(labels)}", f"--timeout={int(timeout)}s"],
            capture_output=True, text=True, check=False, timeout=timeout + 30,
        )
        if result.returncode != 0:
            raise AssertionError(f"xds-probe as a gateway against istiod of {self.cluster}: "
                                 f"{result.stderr.strip()[-2000:]}")
        return json.loads(result.stdout)

    def stop(self) -> None:
        self._stop_cacerts.set()
        if self._cacerts_thread is not None:
            self._cacerts_thread.join(timeout=10)
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def label_selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Kubernetes' LabelSelector semantics (apimachinery's metav1.LabelSelectorAsSelector): every
    matchLabels pair and every matchExpression must hold; an empty or absent selector matches all.
    NotIn and DoesNotExist hold for an absent key. The selector uses the API's JSON field names."""
    selector = selector or {}
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In":
            holds = key in labels and labels[key] in values
        elif operator == "NotIn":
            holds = key not in labels or labels[key] not in values
        elif operator == "Exists":
            holds = key in labels
        elif operator == "DoesNotExist":
            holds = key not in labels
        else:
            raise ValueError(f"unknown label selector operator {operator!r}")
        if not holds:
            return False
    return True


def _rule_matches_pod_create(rule: dict[str, Any]) -> bool:
    def has(values: list[str], wanted: str) -> bool:
        return wanted in values or "*" in values

    return (has(rule.get("operations") or [], "CREATE") and has(rule.get("apiGroups") or [], "")
            and has(rule.get("apiVersions") or [], "v1") and has(rule.get("resources") or [], "pods"))


def injection_webhooks(api: ApiClient, namespace: str, pod_labels: dict[str, str]) -> list[dict[str, Any]]:
    """The mutating webhooks the API server would call for creating a pod with these labels in
    this namespace: every webhook of every MutatingWebhookConfiguration in the API server whose
    rules cover pod CREATE and whose namespaceSelector and objectSelector match the live labels."""
    namespace_labels = CoreV1Api(api).read_namespace(namespace).metadata.labels or {}
    chosen = []
    for configuration in AdmissionregistrationV1Api(api).list_mutating_webhook_configuration().items:
        for webhook in api.sanitize_for_serialization(configuration).get("webhooks") or []:
            if (any(_rule_matches_pod_create(rule) for rule in webhook.get("rules") or [])
                    and label_selector_matches(webhook.get("namespaceSelector"), namespace_labels)
                    and label_selector_matches(webhook.get("objectSelector"), pod_labels)):
                chosen.append(webhook)
    return chosen


def _review(istiod: Istiod, webhook: dict[str, Any], pod: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    """One AdmissionReview to istiod's webhook server, as the API server sends it: to the webhook
    Service's path on istiod's --httpsAddr (the Service's targetPort), TLS verified against the
    webhook's caBundle (which istiod patches in) for the Service's DNS name. The JSONPatch back."""
    service = webhook["clientConfig"].get("service")
    if not service or service["name"] != "istiod" or service["namespace"] != ISTIO_NAMESPACE:
        raise AssertionError(f"webhook {webhook['name']} does not call istiod: {webhook['clientConfig']}")
    ca_bundle = base64.b64decode(webhook["clientConfig"].get("caBundle") or "").decode()
    if not ca_bundle:
        raise AssertionError(f"webhook {webhook['name']} has no caBundle: istiod has not patched it")
    context = ssl.create_default_context(cadata=ca_bundle)
    review = {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod["metadata"].get("name", ""), "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod, "oldObject": None, "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }
    connection = _LoopbackHTTPS(f"{service['name']}.{service['namespace']}.svc", istiod.https_port, context, 20)
    try:
        connection.request("POST", service.get("path") or "/", json.dumps(review),
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise AssertionError(f"istiod of {istiod.cluster} answered the review with {response.status}: {body[:500]!r}")
    answer = json.loads(body)["response"]
    if not answer.get("allowed"):
        raise AssertionError(f"istiod of {istiod.cluster} refused the pod: {answer.get('status')}")
    if not answer.get("patch"):
        return []
    assert answer.get("patchType") == "JSONPatch", answer.get("patchType")
    return json.loads(base64.b64decode(answer["patch"]))


class _LoopbackHTTPS(http.client.HTTPSConnection):
    """HTTPS to a port on loopback, with the certificate verified for `host`: the name the API
    server would dial (the webhook Service's DNS name)."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.verifying = context

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self.verifying.wrap_socket(raw, server_hostname=self.host)


def admitted_pod(istiod: Istiod, api: ApiClient, pod: dict[str, Any]) -> dict[str, Any]:
    """The pod as the API server would store it after mutating admission with istiod as the
    injector: the pod is defaulted by the API server (a dry-run create), every webhook whose
    selectors match is called with it, and each returned JSONPatch is applied. A pod no webhook
    selects comes back as it went in."""
    namespace = pod["metadata"]["namespace"]
    defaulted = api.sanitize_for_serialization(
        CoreV1Api(api).create_namespaced_pod(namespace, pod, dry_run="All"))
    for key in ("uid", "creationTimestamp", "resourceVersion", "managedFields", "generation"):
        defaulted["metadata"].pop(key, None)
    defaulted.pop("status", None)
    for webhook in injection_webhooks(api, namespace, defaulted["metadata"].get("labels") or {}):
        defaulted = jsonpatch.apply_patch(defaulted, _review(istiod, webhook, defaulted, namespace))
    return defaulted


def reinject_deployment(istiod: Istiod, api: ApiClient, namespace: str, deployment: str,
                        timeout: float = 60) -> list[Any]:
    """Re-create a Deployment's pods as the API server would have created them with istiod's
    webhook on: each pod of its ReplicaSet is rebuilt from the ReplicaSet's template, admitted
    (`admitted_pod`) and created; once it is Ready it joins the ReplicaSet, whose old pod then
    goes (it carries the lowest deletion cost). Returns the new pods, read back."""
    core, apps = CoreV1Api(api), AppsV1Api(api)
    selector = apps.read_namespaced_deployment(deployment, namespace).spec.selector.match_labels
    label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
    created = []
    for old in core.list_namespaced_pod(namespace, label_selector=label_selector).items:
        if old.metadata.deletion_timestamp:
            continue
        owner = next(o for o in old.metadata.owner_references or [] if o.controller)
        replica_set = api.sanitize_for_serialization(apps.read_namespaced_replica_set(owner.name, namespace))
        template = replica_set["spec"]["template"]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {**template.get("metadata", {}), "generateName": f"{owner.name}-", "namespace": namespace,
                            "ownerReferences": [api.sanitize_for_serialization(owner)]},
               "spec": template["spec"]}
        injected = admitted_pod(istiod, api, pod)
        # Outside the ReplicaSet until Ready (it would delete a Pending newcomer first), then in.
        metadata = injected["metadata"]
        labels, owners = dict(metadata.get("labels") or {}), metadata.pop("ownerReferences")
        metadata["labels"] = {k: v for k, v in labels.items() if k != "pod-template-hash"}
        new = core.create_namespaced_pod(namespace, injected)
        name = new.metadata.name
        run_until(lambda name=name: _ready(core.read_namespaced_pod(name, namespace)), timeout,
                  f"{namespace}/{name} Ready")
        core.patch_namespaced_pod(old.metadata.name, namespace,
                                  {"metadata": {"annotations": {DELETION_COST: "-1000"}}})
        core.patch_namespaced_pod(name, namespace, {"metadata": {"labels": labels, "ownerReferences": owners}})
        run_until(lambda old=old: not any(p.metadata.name == old.metadata.name and not p.metadata.deletion_timestamp
                                          for p in core.list_namespaced_pod(namespace).items),
                  timeout, f"{namespace}/{old.metadata.name} replaced by {name}")
        new = core.read_namespaced_pod(name, namespace)
        assert not new.metadata.deletion_timestamp, f"{namespace}/{name}: its ReplicaSet deleted the injected pod"
        created.append(new)
    return created


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def workload_certificate(istiod: Istiod, namespace: str, service_account: str, trust_bundle_pem: str,
                         timeout: float = 60) -> list[str]:
    """The certificate chain istiod's CA signs for a workload of `namespace`/`service_account` in
    istiod's cluster, asked for as an istio-agent asks (the `ca-client` tool: Istio's citadel
    client, a CSR for spiffe://<istiod's trust domain>/ns/<namespace>/sa/<service_account>, a
    TokenRequest token with audience istio-ca, over istiod's secure gRPC verified against
    `trust_bundle_pem`). PEM certificates as istiod returns them: the leaf first."""
    core = CoreV1Api(admin_api(istiod.control_plane))
    token = core.create_namespaced_service_account_token(
        service_account, namespace, {"spec": {"audiences": ["istio-ca"], "expirationSeconds": 600}}).status.token
    trust_domain = istiod.mesh_config()["trustDomain"]
    with tempfile.TemporaryDirectory(dir=istiod.workdir) as directory:
        token_file, bundle_file = Path(directory) / "token", Path(directory) / "trust-bundle.pem"
        token_file.write_text(token)
        bundle_file.write_text(trust_bundle_pem)
        result = subprocess.run(
            [str(BIN / "ca-client"), f"--ca=127.0.0.1:{istiod.secure_grpc_port}", f"--root-cert={bundle_file}",
             f"--token={token_file}", f"--cluster-id={istiod.cluster}",
             f"--identity=spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"],
            capture_output=True, text=True, check=False, timeout=timeout,
        )
    if result.returncode != 0:
        raise AssertionError(f"ca-client against istiod of {istiod.cluster}: {result.stderr.strip()[-2000:]}")
    return pem_certificates(result.stdout)


def pem_certificates(text: str) -> list[str]:
    """The PEM certificates in `text`, in order, each ending in one newline."""
    return [block.strip() + "\n" + CERTIFICATE_END + "\n" for block in text.split(CERTIFICATE_END) if block.strip()]
