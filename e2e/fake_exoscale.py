"""A fake Exoscale: what terraform-provider-exoscale's calls would return, backed by the local
control planes, plus a fake cloud controller (CCM) for LoadBalancer Services.

Behaviour follows ../shared/reference/local-control-planes.md §6 and exoscale-sks-and-pulumi.md:
an SKS cluster is its control plane's endpoint and CA; SksKubeconfig is a real kubeconfig whose
client certificate that cluster's CA issued for the requested user and groups; an NLB gets an
address from 192.0.2.0/24 (TEST-NET-1, never contacted); the CCM adds NLB services for an
annotated Service and writes the NLB's address into its status, and removes them some time after
the Service is gone; a nodepool cannot be deleted while an NLB service targets its instance pool.
"""

from __future__ import annotations

import datetime
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import config as kube_config
from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client.exceptions import ApiException

from e2e.controlplane import ControlPlane, fake_node, kubeconfig

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
    action: str  # "create" or "delete"
    kind: str  # "cluster", "nodepool", "nlb", ...
    id: str
    at: float


def admin_api(control_plane: ControlPlane) -> ApiClient:
    return kube_config.new_client_from_config(str(control_plane.admin_kubeconfig_path()))


class FakeExoscale:
    """The Exoscale resources of the program, keyed by Pulumi type token."""

    def __init__(self, control_planes: dict[str, ControlPlane]) -> None:
        self.control_planes = control_planes  # config cluster name -> control plane
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
        }

    # The Pulumi side ---------------------------------------------------------------------
    def create(self, type_token: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        kind = type_token.rsplit(":", maxsplit=1)[-1]
        handler = self._creators.get(kind)
        resource_id = str(uuid.uuid4())
        outputs = handler(resource_id, inputs) if handler else {}
        self._event("create", kind, resource_id)
        return resource_id, {**inputs, **outputs}

    def delete(self, type_token: str, resource_id: str) -> None:
        kind = type_token.rsplit(":", maxsplit=1)[-1]
        handler = self._deleters.get(kind)
        if handler:
            handler(resource_id)
        self._event("delete", kind, resource_id)

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
        return {"endpoint": control_plane.endpoint, "controlPlaneCa": control_plane.ca.cert_pem,
                "state": "running", "version": "1.34.2", "nodepools": [],
                "createdAt": datetime.datetime.now(datetime.UTC).isoformat()}

    def _delete_cluster(self, resource_id: str) -> None:
        if any(pool.cluster_id == resource_id for pool in self.nodepools.values()):
            raise CloudRefusedError(f"SKS cluster {resource_id} still has nodepools")
        self.cluster_names.pop(resource_id, None)

    def _control_plane(self, cluster_id: str) -> ControlPlane:
        return self.control_planes[self.cluster_names[cluster_id]]

    def _create_nodepool(self, resource_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
        family, size = inputs["instanceType"].split(".", 1)
        if family != "standard" or size not in STANDARD_SIZES:
            raise CloudRefusedError(f"the fake knows standard.{'/'.join(STANDARD_SIZES)}, not {inputs['instanceType']}")
        cpu, memory = STANDARD_SIZES[size]
        instance_pool_id = str(uuid.uuid4())
        names = [f"pool-{instance_pool_id[:5]}-{i}" for i in range(int(inputs["size"]))]
        core = CoreV1Api(admin_api(self._control_plane(inputs["clusterId"])))
        for node_name in names:
            core.create_node(fake_node(node_name, cpu, memory, {
                "node.kubernetes.io/instance-type": inputs["instanceType"],
                "topology.kubernetes.io/zone": inputs["zone"],
                **(inputs.get("labels") or {}),
            }))
        self.nodepools[resource_id] = Nodepool(resource_id, inputs["clusterId"], instance_pool_id, names)
        return {"instancePoolId": instance_pool_id, "state": "running", "version": "1.34.2"}

    def _delete_nodepool(self, resource_id: str) -> None:
        pool = self.nodepools[resource_id]
        with self._lock:
            targeting = [nlb.name for nlb in self.nlbs.values() if pool.instance_pool_id in nlb.services.values()]
        if targeting:
            raise CloudRefusedError(f"instance pool {pool.instance_pool_id} is still the target of NLB services "
                               f"of {', '.join(targeting)}")
        core = CoreV1Api(admin_api(self._control_plane(pool.cluster_id)))
        for node_name in pool.node_names:
            core.delete_node(node_name)
        self.deleted_nodepools[resource_id] = self.nodepools.pop(resource_id)

    def _create_kubeconfig(self, resource_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
        control_plane = self._control_plane(inputs["clusterId"])
        cert, key = control_plane.ca.issue(
            inputs["user"], tuple(inputs.get("groups") or ()),
            validity=datetime.timedelta(seconds=int(inputs.get("ttlSeconds") or 2592000)),
        )
        return {"kubeconfig": kubeconfig(control_plane.endpoint, control_plane.ca.cert_pem, inputs["user"], cert, key),
                "readyForRenewal": False}

    def _create_nlb(self, resource_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            ip = f"192.0.2.{self._next_ip}"
            self._next_ip += 1
            self.nlbs[resource_id] = Nlb(resource_id, inputs.get("name", resource_id), ip)
        return {"ipAddress": ip, "state": "running"}

    def _delete_nlb(self, resource_id: str) -> None:
        # Deleting an NLB deletes its services with it.
        with self._lock:
            self.deleted_nlbs[resource_id] = self.nlbs.pop(resource_id)

    # The fake CCM ------------------------------------------------------------------------
    def _start_ccm(self, cluster: str) -> None:
        if cluster not in self._ccm_threads:
            thread = threading.Thread(target=self._ccm_loop, args=(cluster,), daemon=True, name=f"ccm-{cluster}")
            self._ccm_threads[cluster] = thread
            thread.start()

    def _ccm_loop(self, cluster: str) -> None:
        core = CoreV1Api(admin_api(self.control_planes[cluster]))
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
