"""A fake Exoscale: what terraform-provider-exoscale's calls would return, backed by the local
control planes, plus a fake cloud controller (CCM) for LoadBalancer Services.

Behaviour follows ../shared/reference/local-control-planes.md §6 and exoscale-sks-and-pulumi.md:
an SKS cluster is its control plane's endpoint and CA; SksKubeconfig is a real kubeconfig whose
client certificate that cluster's CA issued for the requested user and groups; an NLB gets an
address from 192.0.2.0/24 (TEST-NET-1, never contacted); the CCM adds NLB services for an
annotated Service and writes the NLB's address into its status, and removes them some time after
the Service is gone; a nodepool cannot be deleted while an NLB service targets its instance pool.

The state and the CCM threads live in the test process; the Exoscale stand-in provider plugin
(e2e/providers/exoscale.py), which the real engine starts anew for each `pulumi` command, is a
client of the small loopback JSON API that `serve()` starts (its URL goes to the plugin as
`EXOSCALE_API_ENDPOINT`, the variable egoscale v3 reads for its endpoint override):

    POST   /v1/<Kind>        {"name": ..., "inputs": {...}}  -> {"id": ..., "outputs": {...}}
    GET    /v1/<Kind>/<id>                                   -> outputs, or 404 when gone
    PATCH  /v1/<Kind>/<id>   {"changes": {...}}              -> outputs
    DELETE /v1/<Kind>/<id>                                   -> 204
An operation the real API refuses answers 409 {"message": ...}.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from cryptography import x509

from e2e.controlplane import ControlPlane, fake_node, kubeconfig

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, CoreV1Api

CCM_ANNOTATION = "service.beta.kubernetes.io/exoscale-loadbalancer-"
# Exoscale's standard instance family: vCPUs and memory per size (Exoscale's published instance
# types); the nodes KWOK simulates get this capacity, so the scheduler packs pods as on SKS.
STANDARD_SIZES = {
    "medium": ("2", "4Gi"),
    "large": ("4", "8Gi"),
    "extra-large": ("4", "16Gi"),
    "huge": ("8", "32Gi"),
    "mega": ("12", "64Gi"),
    "titan": ("16", "128Gi"),
}
CCM_POLL_SECONDS = 0.5


class CloudRefusedError(RuntimeError):
    """The fake API refused an operation the real one refuses too."""


@dataclass
class Nlb:
    id: str
    name: str
    ip: str
    # NLB services the CCM created, by Service UID -> the instance pool they target.
    services: dict[str, str] = field(default_factory=dict)
    # Every instance pool a service of this NLB ever targeted (for teardown-order checks).
    targeted_pools: set[str] = field(default_factory=set)


@dataclass
class Nodepool:
    id: str
    cluster_id: str
    instance_pool_id: str
    node_names: list[str]


@dataclass
class Event:
    action: str  # "create", "update" or "delete"
    kind: str  # "cluster", "nodepool", "nlb", ...
    id: str
    at: float


# The Kubernetes client is imported where it is used: the offline suite (without the e2e's
# packages) drives the fake API for resources that need no control plane.
def admin_api(control_plane: ControlPlane) -> ApiClient:
    from kubernetes import config as kube_config  # noqa: PLC0415

    return kube_config.new_client_from_config(str(control_plane.admin_kubeconfig_path()))


def core_api(control_plane: ControlPlane) -> CoreV1Api:
    from kubernetes.client import CoreV1Api  # noqa: PLC0415

    return CoreV1Api(admin_api(control_plane))


class FakeExoscale:
    """The Exoscale resources of the program, keyed by Pulumi type token."""

    def __init__(self, control_planes: dict[str, ControlPlane], ccm: bool = True) -> None:
        self.control_planes = control_planes  # config cluster name -> control plane
        self.ccm = ccm  # False: no fake CCM (offline tests have no Kubernetes API to watch)
        self.cluster_names: dict[str, str] = {}  # SKS cluster id -> config cluster name
        self.nodepools: dict[str, Nodepool] = {}
        self.nlbs: dict[str, Nlb] = {}
        # Kept after deletion, for teardown-order checks.
        self.deleted_nodepools: dict[str, Nodepool] = {}
        self.deleted_nlbs: dict[str, Nlb] = {}
        self.events: list[Event] = []
        self._next_ip = 10
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ccm_threads: dict[str, threading.Thread] = {}
        # Security groups, their rules and anti-affinity groups only need an id here.
        self._creators: dict[str, Callable[[str, dict[str, Any]], dict[str, Any]]] = {
            "SksCluster": self._create_cluster, "SksNodepool": self._create_nodepool,
            "SksKubeconfig": self._create_kubeconfig, "Nlb": self._create_nlb,
        }
        self._deleters: dict[str, Callable[[str], None]] = {
            "SksCluster": self._delete_cluster, "SksNodepool": self._delete_nodepool, "Nlb": self._delete_nlb,
            "SecurityGroup": self._delete_group("securityGroupIds"),
            "AntiAffinityGroup": self._delete_group("antiAffinityGroupIds"),
        }
        self._updaters: dict[str, Callable[[str, dict[str, Any]], None]] = {
            "SksNodepool": self._update_nodepool, "Nlb": self._update_nlb,
        }
        # Every live resource: id -> (kind, its state as the provider returns it).
        self.states: dict[str, tuple[str, dict[str, Any]]] = {}
        self._server: ThreadingHTTPServer | None = None

    # The Pulumi side ---------------------------------------------------------------------
    def create(self, type_token: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """`type_token`: a Pulumi type token or just its kind ("Nlb")."""
        kind = type_token.rsplit(":", maxsplit=1)[-1]
        handler = self._creators.get(kind)
        resource_id = str(uuid.uuid4())
        outputs = {**inputs, **(handler(resource_id, inputs) if handler else self._plain_outputs(kind, inputs))}
        # The real provider's kubeconfig id is its certificates' serial numbers (kubeconfigToID).
        resource_id = outputs.pop("id", resource_id)
        with self._lock:
            self.states[resource_id] = (kind, outputs)
        self._event("create", kind, resource_id)
        return resource_id, outputs

    def get(self, type_token: str, resource_id: str) -> dict[str, Any]:
        """The live state; KeyError when there is no such resource."""
        kind = type_token.rsplit(":", maxsplit=1)[-1]
        with self._lock:
            live_kind, state = self.states[resource_id]
            if live_kind != kind:
                raise KeyError(resource_id)
            if kind == "SksCluster":
                pools = sorted(p.id for p in self.nodepools.values() if p.cluster_id == resource_id)
                state = {**state, "nodepools": pools}
            return dict(state)

    def update(self, type_token: str, resource_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Applies what the provider's Update sends (only the inputs it updates in place)."""
        kind = type_token.rsplit(":", maxsplit=1)[-1]
        self.get(kind, resource_id)
        handler = self._updaters.get(kind)
        if handler:
            handler(resource_id, changes)
        with self._lock:
            self.states[resource_id][1].update(changes)
        self._event("update", kind, resource_id)
        return self.get(kind, resource_id)

    def delete(self, type_token: str, resource_id: str) -> None:
        kind = type_token.rsplit(":", maxsplit=1)[-1]
        handler = self._deleters.get(kind)
        if handler:
            handler(resource_id)
        with self._lock:
            self.states.pop(resource_id, None)
        self._event("delete", kind, resource_id)

    def _plain_outputs(self, kind: str, inputs: dict[str, Any]) -> dict[str, Any]:
        """Security groups, their rules and anti-affinity groups: only the names the API resolves."""
        if kind != "SecurityGroupRule":
            return {}
        with self._lock:
            names = {i: state.get("name") for i, (k, state) in self.states.items() if k == "SecurityGroup"}
        return {
            "securityGroupId": inputs.get("securityGroupId"),
            "securityGroup": names.get(inputs.get("securityGroupId", "")),
            "userSecurityGroup": names.get(inputs.get("userSecurityGroupId", "")),
            "publicSecurityGroup": None,
        }

    def _event(self, action: str, kind: str, resource_id: str) -> None:
        with self._lock:
            self.events.append(Event(action, kind, resource_id, time.monotonic()))

    def _create_cluster(self, resource_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
        cluster = next((c for c in self.control_planes if inputs["name"].endswith(f"-{c}")), None)
        if cluster is None:
            raise CloudRefusedError(f"no control plane for SKS cluster {inputs['name']!r}")
        self.cluster_names[resource_id] = cluster
        control_plane = self.control_planes[cluster]
        self._start_ccm(cluster)
        addons = [name for name, on in (("exoscale-cloud-controller", inputs.get("exoscaleCcm", True)),
                                        ("metrics-server", inputs.get("metricsServer", True))) if on]
        # One CA here plays the control plane's, the kubelets' and the aggregation layer's.
        return {"endpoint": control_plane.endpoint, "controlPlaneCa": control_plane.ca.cert_pem,
                "kubeletCa": control_plane.ca.cert_pem, "aggregationCa": control_plane.ca.cert_pem,
                "state": "running", "version": inputs.get("version") or "1.34.2", "nodepools": [],
                "addons": addons, "enableKubeProxy": inputs.get("enableKubeProxy", True),
                "createdAt": _now()}

    def _delete_cluster(self, resource_id: str) -> None:
        if any(pool.cluster_id == resource_id for pool in self.nodepools.values()):
            raise CloudRefusedError(f"SKS cluster {resource_id} still has nodepools")
        self.cluster_names.pop(resource_id, None)

    def _delete_group(self, pool_key: str) -> Callable[[str], None]:
        """A security or anti-affinity group cannot go while a nodepool's instances are in it.
        Assumed, not in ../shared/reference: stricter than a fake that deletes anything, and
        the program's dependency edges delete the nodepool first anyway."""
        def delete(resource_id: str) -> None:
            with self._lock:
                users = [state.get("name") for kind, state in self.states.values()
                         if kind == "SksNodepool" and resource_id in (state.get(pool_key) or [])]
            if users:
                raise CloudRefusedError(f"group {resource_id} is still in use by nodepool {', '.join(users)}")
        return delete

    def _control_plane(self, cluster_id: str) -> ControlPlane:
        return self.control_planes[self.cluster_names[cluster_id]]

    def _create_nodepool(self, resource_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
        family, size = inputs["instanceType"].split(".", 1)
        if family != "standard" or size not in STANDARD_SIZES:
            raise CloudRefusedError(f"the fake knows standard.{'/'.join(STANDARD_SIZES)}, not {inputs['instanceType']}")
        instance_pool_id = str(uuid.uuid4())
        pool = Nodepool(resource_id, inputs["clusterId"], instance_pool_id, [])
        self._add_nodes(pool, inputs, int(inputs["size"]))
        self.nodepools[resource_id] = pool
        return {"instancePoolId": instance_pool_id, "state": "running", "version": "1.34.2",
                "templateId": str(uuid.uuid5(uuid.NAMESPACE_URL, "sks-template-1.34.2")), "createdAt": _now()}

    def _add_nodes(self, pool: Nodepool, inputs: dict[str, Any], count: int) -> None:
        cpu, memory = STANDARD_SIZES[inputs["instanceType"].split(".", 1)[1]]
        core = core_api(self._control_plane(pool.cluster_id))
        first = int(pool.node_names[-1].rsplit("-", 1)[1]) + 1 if pool.node_names else 0
        for index in range(first, first + count):
            node_name = f"pool-{pool.instance_pool_id[:5]}-{index}"
            core.create_node(fake_node(node_name, cpu, memory, {
                "node.kubernetes.io/instance-type": inputs["instanceType"],
                "topology.kubernetes.io/zone": inputs["zone"],
                **(inputs.get("labels") or {}),
            }))
            pool.node_names.append(node_name)

    def _update_nodepool(self, resource_id: str, changes: dict[str, Any]) -> None:
        # Scaling the instance pool adds or removes nodes; other changes apply to new nodes only.
        if "size" not in changes:
            return
        pool = self.nodepools[resource_id]
        state = {**self.states[resource_id][1], **changes}
        extra = int(changes["size"]) - len(pool.node_names)
        if extra > 0:
            self._add_nodes(pool, state, extra)
        core = core_api(self._control_plane(pool.cluster_id))
        while len(pool.node_names) > int(changes["size"]):
            core.delete_node(pool.node_names.pop())

    def _delete_nodepool(self, resource_id: str) -> None:
        pool = self.nodepools[resource_id]
        with self._lock:
            targeting = [nlb.name for nlb in self.nlbs.values() if pool.instance_pool_id in nlb.services.values()]
        if targeting:
            raise CloudRefusedError(f"instance pool {pool.instance_pool_id} is still the target of NLB services "
                               f"of {', '.join(targeting)}")
        core = core_api(self._control_plane(pool.cluster_id))
        for node_name in pool.node_names:
            core.delete_node(node_name)
        self.deleted_nodepools[resource_id] = self.nodepools.pop(resource_id)

    def _create_kubeconfig(self, resource_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
        control_plane = self._control_plane(inputs["clusterId"])
        cert, key = control_plane.ca.issue(
            inputs["user"], tuple(inputs.get("groups") or ()),
            validity=datetime.timedelta(seconds=int(inputs.get("ttlSeconds") or 2592000)),
        )
        serials = [x509.load_pem_x509_certificate(pem.encode()).serial_number
                   for pem in (control_plane.ca.cert_pem, cert)]
        return {"kubeconfig": kubeconfig(control_plane.endpoint, control_plane.ca.cert_pem, inputs["user"], cert, key),
                "readyForRenewal": False, "id": ":".join(map(str, serials))}

    def _create_nlb(self, resource_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            ip = f"192.0.2.{self._next_ip}"
            self._next_ip += 1
            self.nlbs[resource_id] = Nlb(resource_id, inputs.get("name", resource_id), ip)
        return {"ipAddress": ip, "state": "running", "services": [], "createdAt": _now()}

    def _update_nlb(self, resource_id: str, changes: dict[str, Any]) -> None:
        if "name" in changes:
            with self._lock:
                self.nlbs[resource_id].name = changes["name"]

    def _delete_nlb(self, resource_id: str) -> None:
        # Deleting an NLB deletes its services with it.
        with self._lock:
            self.deleted_nlbs[resource_id] = self.nlbs.pop(resource_id)

    # The fake CCM ------------------------------------------------------------------------
    def _start_ccm(self, cluster: str) -> None:
        if self.ccm and cluster not in self._ccm_threads:
            thread = threading.Thread(target=self._ccm_loop, args=(cluster,), daemon=True, name=f"ccm-{cluster}")
            self._ccm_threads[cluster] = thread
            thread.start()

    def _ccm_loop(self, cluster: str) -> None:
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        core = core_api(self.control_planes[cluster])
        while not self._stop.wait(CCM_POLL_SECONDS):
            try:
                self._reconcile(core)
            except (ApiException, OSError):
                continue  # the control plane may be restarting or gone at teardown

    def _reconcile(self, core: CoreV1Api) -> None:
        services = [s for s in core.list_service_for_all_namespaces().items if s.spec.type == "LoadBalancer"]
        live = {s.metadata.uid for s in services}
        with self._lock:
            for nlb in self.nlbs.values():
                for uid in [uid for uid in nlb.services if uid not in live]:
                    del nlb.services[uid]  # the Service is gone: remove its NLB services
        for service in services:
            annotations = service.metadata.annotations or {}
            with self._lock:
                nlb = self.nlbs.get(annotations.get(f"{CCM_ANNOTATION}id", ""))
                if nlb is None or annotations.get(f"{CCM_ANNOTATION}external") != "true":
                    continue
                pool = annotations.get(f"{CCM_ANNOTATION}service-instancepool-id", "")
                nlb.services[service.metadata.uid] = pool
                nlb.targeted_pools.add(pool)
            ingress = (service.status.load_balancer.ingress or []) if service.status.load_balancer else []
            if [i.ip for i in ingress] != [nlb.ip]:
                core.patch_namespaced_service_status(
                    service.metadata.name, service.metadata.namespace,
                    {"status": {"loadBalancer": {"ingress": [{"ip": nlb.ip}]}}},
                )

    def stop(self) -> None:
        self._stop.set()
        for thread in self._ccm_threads.values():
            thread.join(timeout=5)

    # The loopback API ----------------------------------------------------------------------
    def serve(self) -> str:
        """Starts the JSON API on 127.0.0.1 (a free port) in a daemon thread; returns its URL."""
        if self._server is None:
            self._server = ThreadingHTTPServer(("127.0.0.1", 0), _api_handler(self))
            self._server.daemon_threads = True
            threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-exoscale-api").start()
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        """Stops the API and the fake CCM."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.stop()


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()


def _api_handler(cloud: FakeExoscale) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: Any = None) -> None:
            payload = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _handle(self, method: str) -> None:
            parts = self.path.strip("/").split("/")
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else {}
            try:
                if parts[0] != "v1" or len(parts) not in (2, 3):
                    self._answer(404, {"message": f"no route {self.path}"})
                elif method == "POST" and len(parts) == 2:
                    resource_id, outputs = cloud.create(parts[1], body.get("name", ""), body["inputs"])
                    self._answer(200, {"id": resource_id, "outputs": outputs})
                elif method == "GET":
                    self._answer(200, cloud.get(parts[1], parts[2]))
                elif method == "PATCH":
                    self._answer(200, cloud.update(parts[1], parts[2], body["changes"]))
                elif method == "DELETE":
                    cloud.delete(parts[1], parts[2])
                    self._answer(204)
                else:
                    self._answer(405, {"message": f"{method} {self.path}"})
            except CloudRefusedError as refused:
                self._answer(409, {"message": str(refused)})
            except KeyError as missing:
                self._answer(404, {"message": f"not found: {missing}"})
            except Exception as error:  # noqa: BLE001 - the plugin shows the engine what went wrong
                self._answer(500, {"message": f"{type(error).__name__}: {error}"})

        def do_POST(self) -> None:
            self._handle("POST")

        def do_GET(self) -> None:
            self._handle("GET")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: the engine's own output says what was called

    return Handler
