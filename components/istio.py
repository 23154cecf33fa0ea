"""Istio multi-primary, multi-network control plane for one cluster, installed with Helm releases.

Order per cluster (reference/istio-multicluster.md §1): labelled istio-system namespace, `cacerts`,
base, istiod, east-west gateway, cross-network Gateway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.pki import IntermediateCa
from components.readiness import Readiness, readiness_of
from mesh_constants import CCM_ANNOTATION, CONTROL_PLANE_TYPE, EASTWEST_GATEWAY, EASTWEST_GATEWAY_TYPE

ISTIO_NAMESPACE = "istio-system"
NETWORK_LABEL = "topology.istio.io/network"
EASTWEST_SELECTOR = {"istio": "eastwestgateway"}
READER_SERVICE_ACCOUNT = "istio-reader-service-account"
READER_TOKEN_SECRET = "istio-reader-service-account-istio-remote-secret-token"
# The base chart only installs CRDs and RBAC: it is quick, or something is badly wrong.
BASE_TIMEOUT_SECONDS = 300
# The charts' autoscaler ceiling (istiod autoscaleMax, gateway autoscaling.maxReplicas), raised
# when more replicas than that are asked for.
CHART_AUTOSCALE_MAX = 5
# The labels istiod's chart gives its pods (and selects in its own PodDisruptionBudget).
ISTIOD_POD_LABELS = {"app": "istiod"}
# Multi-root trust, both default false in Istio: istiod accepts a root-cert.pem that adds a root
# (pilot/pkg/features, ISTIO_MULTIROOT_MESH; pilot/pkg/bootstrap/istio_ca.go handleEvent), and
# istio-agent takes the new trust bundle over xDS without a restart (pilot/cmd/pilot-agent/options,
# PROXY_CONFIG_XDS_AGENT, read from the proxies' proxyMetadata).
ISTIOD_MULTIROOT_ENV = {"ISTIO_MULTIROOT_MESH": "true"}
PROXY_MULTIROOT_METADATA = {"PROXY_CONFIG_XDS_AGENT": "true"}


@dataclass(frozen=True)
class ReleasePolicy:
    """How a Helm release behaves when an install or upgrade fails (README: Helm failure policy)."""

    timeout_seconds: int
    # Roll a failed upgrade back (and purge a failed install) so the previous control plane keeps
    # serving; Helm then needs no manual `helm rollback` before the next `pulumi up`.
    atomic: bool


@dataclass(frozen=True)
class IstioCharts:
    """Where and at which version Helm gets Istio's charts, and how long a release may take."""

    version: str
    # Fetched at every preview as well as at up.
    repository: str
    timeout_seconds: int


@dataclass(frozen=True)
class IstioControlPlaneArgs:
    cluster_name: str
    network: str
    mesh_id: str
    charts: IstioCharts
    provider: k8s.Provider
    ca: IntermediateCa
    # The cluster's MeshCluster.nodes_ready: istiod's pods need nodes, its API objects do not.
    nodes_ready: Readiness
    replicas: int
    mtls_strict: bool = True
    multi_root_trust: bool = True


@dataclass(frozen=True)
class EastWestGatewayArgs:
    cluster_name: str
    network: str
    charts: IstioCharts
    provider: k8s.Provider
    # istio-system, from the cluster's control plane.
    namespace: pulumi.Input[str]
    # The cluster's IstioControlPlane.istiod_ready: the gateway's proxy image is injected by
    # istiod's webhook, and istiod validates the cross-network Gateway.
    istiod_ready: Readiness
    nlb_id: pulumi.Input[str]
    instance_pool_id: pulumi.Input[str]
    # The cluster's MeshCluster.nodes_ready: the gateway's pods need nodes.
    nodes_ready: Readiness
    replicas: int


def spread_across_nodes(pod_labels: dict[str, str]) -> list[dict[str, Any]]:
    """At most one more replica on any node than on another, so one node's drain or loss takes
    one replica. Tainted nodes (cordoned, unreachable) are left out of the count, so a drain's
    replacement pod may land beside a sibling instead of staying pending."""
    return [{
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "DoNotSchedule",
        "nodeTaintsPolicy": "Honor",
        "labelSelector": {"matchLabels": pod_labels},
    }]


def istiod_availability_values(replicas: int) -> dict[str, Any]:
    """The istiod chart's autoscaler floor (its replica count while autoscaleEnabled, the default)
    and, from two replicas, a PDB that lets a drain evict one at a time. Below two the chart
    renders no PDB: a budget over one pod would block every drain (kubernetes/kubernetes#93476)."""
    values: dict[str, Any] = {
        "replicaCount": replicas,
        "autoscaleMin": replicas,
        "autoscaleMax": max(replicas, CHART_AUTOSCALE_MAX),
    }
    if replicas >= 2:
        # minAvailable, the key the chart's values.yaml declares (maxUnavailable is only a comment).
        values["pdb"] = {"minAvailable": replicas - 1}
        values["topologySpreadConstraints"] = spread_across_nodes(ISTIOD_POD_LABELS)
    return values


def gateway_availability_values(replicas: int, pod_labels: dict[str, str]) -> dict[str, Any]:
    """As istiod_availability_values, for the gateway chart's keys."""
    values: dict[str, Any] = {
        "replicaCount": replicas,
        "autoscaling": {"minReplicas": replicas, "maxReplicas": max(replicas, CHART_AUTOSCALE_MAX)},
    }
    if replicas >= 2:
        values["podDisruptionBudget"] = {"maxUnavailable": 1}
        values["topologySpreadConstraints"] = spread_across_nodes(pod_labels)
    return values


def istiod_values(
    cluster_name: str, network: str, mesh_id: str, replicas: int, multi_root_trust: bool = True
) -> dict[str, Any]:
    # DNS proxying lets a client resolve a Service that only exists in another cluster.
    # ISTIO_META_DNS_AUTO_ALLOCATE is deprecated since 1.25: istiod allocates addresses itself.
    proxy_metadata = {"ISTIO_META_DNS_CAPTURE": "true", **(PROXY_MULTIROOT_METADATA if multi_root_trust else {})}
    return {
        "global": {
            "meshID": mesh_id,
            "multiCluster": {"clusterName": cluster_name},
            "network": network,
        },
        # Top-level `env` (the flattened chart, 1.24+): istiod's container environment.
        **({"env": dict(ISTIOD_MULTIROOT_ENV)} if multi_root_trust else {}),
        "meshConfig": {"defaultConfig": {"proxyMetadata": proxy_metadata}},
        # The chart asks for 2 GiB; a standard.medium node has 4 GiB for everything.
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
        **istiod_availability_values(replicas),
    }


def eastwest_gateway_values(
    network: str, nlb_id: pulumi.Input[str], instance_pool_id: pulumi.Input[str], replicas: int
) -> dict[str, Any]:
    return {
        "name": EASTWEST_GATEWAY,
        # networkGateway sets the four fixed ports, the network labels and the requested network view.
        "networkGateway": network,
        "service": stack_owned_load_balancer(nlb_id, instance_pool_id),
        **gateway_availability_values(replicas, {"app": EASTWEST_GATEWAY, **EASTWEST_SELECTOR}),
    }


def istio_release(
    resource_name: str, chart: str, release_name: str, namespace: pulumi.Input[str], charts: IstioCharts,
    values: dict[str, Any], policy: ReleasePolicy, opts: pulumi.ResourceOptions,
) -> k8s.helm.v3.Release:
    """A release of one of Istio's charts at the mesh's pinned version."""
    return k8s.helm.v3.Release(
        resource_name,
        name=release_name,  # a fixed name: Pulumi's random suffix would break the gateway selector
        chart=chart,
        version=charts.version,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=charts.repository),
        namespace=namespace,
        values=values,
        timeout=policy.timeout_seconds,
        atomic=policy.atomic,
        cleanup_on_fail=True,
        max_history=5,
        opts=opts,
    )


def stack_owned_load_balancer(nlb_id: pulumi.Input[str], instance_pool_id: pulumi.Input[str]) -> dict[str, Any]:
    """Service values for a LoadBalancer on an NLB the stack owns (so `pulumi destroy` removes it)."""
    return {
        "type": "LoadBalancer",
        "annotations": {
            # The NLB is a stack resource; the cloud controller only adds services to it.
            f"{CCM_ANNOTATION}id": nlb_id,
            f"{CCM_ANNOTATION}external": "true",
            # Pin the target pool so a second nodepool does not break the gateway.
            f"{CCM_ANNOTATION}service-instancepool-id": instance_pool_id,
        },
    }


def cross_network_gateway_manifest() -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "cross-network-gateway", "namespace": ISTIO_NAMESPACE},
        "spec": {
            "selector": dict(EASTWEST_SELECTOR),
            "servers": [{
                "port": {"number": 15443, "name": "tls", "protocol": "TLS"},
                "tls": {"mode": "AUTO_PASSTHROUGH"},
                "hosts": ["*.local"],
            }],
        },
    }


def strict_mtls_manifest() -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": ISTIO_NAMESPACE},
        "spec": {"mtls": {"mode": "STRICT"}},
    }


def _k8s_options(parent: pulumi.Resource, provider: k8s.Provider, **kwargs: Any) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions(parent=parent, provider=provider, **kwargs)


def _custom_resource(
    resource_name: str, manifest: dict[str, Any], opts: pulumi.ResourceOptions
) -> k8s.apiextensions.CustomResource:
    return k8s.apiextensions.CustomResource(
        resource_name,
        api_version=manifest["apiVersion"],
        kind=manifest["kind"],
        metadata=manifest["metadata"],
        spec=manifest["spec"],
        opts=opts,
    )


class IstioControlPlane(pulumi.ComponentResource):
    """istio-system, `cacerts`, the base and istiod releases, mesh-wide mTLS and the reader token
    that peers' remote secrets are built from."""

    namespace: pulumi.Output[str]
    # The base64 `data` of the reader service account's token Secret (keys `token`, `ca.crt`).
    reader_token_data: pulumi.Output[dict[str, str]]
    # istiod's release alone, for what needs its webhooks but not the rest of the control plane.
    istiod_ready: Readiness
    # Resolves once this cluster's `cacerts` and istiod are applied: what the exported CA state waits for.
    ca_applied: pulumi.Output[Any]

    def __init__(self, name: str, args: IstioControlPlaneArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(CONTROL_PLANE_TYPE, name, None, opts)
        self._args = args
        cluster = args.cluster_name

        namespace = k8s.core.v1.Namespace(
            f"{cluster}-{ISTIO_NAMESPACE}",
            metadata={"name": ISTIO_NAMESPACE, "labels": {NETWORK_LABEL: args.network}},
            opts=self._k8s(),
        )
        self.namespace = namespace.metadata.name
        # istiod only uses a plugged-in CA that exists when it starts; otherwise it signs with a
        # self-signed root of its own and cross-cluster mTLS fails.
        cacerts = k8s.core.v1.Secret(
            f"{cluster}-cacerts",
            metadata={"name": "cacerts", "namespace": self.namespace},
            string_data=pulumi.Output.secret({
                "ca-cert.pem": args.ca.cert_pem,
                "ca-key.pem": args.ca.key_pem,
                "root-cert.pem": args.ca.root_cert_pem,
                "cert-chain.pem": args.ca.chain_pem,
            }),
            opts=self._k8s(),
        )
        # Base goes into the labelled istio-system (named by a string, hence the explicit wait). It
        # holds CRDs, RBAC and webhook configurations only: no pods, so no wait for nodes.
        base = self._release(
            "base", "istio-base", {"defaultRevision": "default"},
            ReleasePolicy(BASE_TIMEOUT_SECONDS, atomic=True), depends_on=[namespace],
        )
        # istiod needs its CRDs (base), the plugged-in CA (cacerts) and nodes to run on.
        istiod = self._release(
            "istiod", "istiod",
            istiod_values(args.cluster_name, args.network, args.mesh_id, args.replicas, args.multi_root_trust),
            ReleasePolicy(args.charts.timeout_seconds, atomic=True), depends_on=[base, cacerts, args.nodes_ready],
        )
        if args.mtls_strict:
            _custom_resource(f"{cluster}-strict-mtls", strict_mtls_manifest(), self._k8s(depends_on=[istiod]))
        # A long-lived token for the reader service account that the base chart creates; peers'
        # remote secrets are built from it.
        reader_token = k8s.core.v1.Secret(
            f"{cluster}-istio-reader-token",
            metadata={
                "name": READER_TOKEN_SECRET,
                "namespace": self.namespace,
                "annotations": {"kubernetes.io/service-account.name": READER_SERVICE_ACCOUNT},
            },
            type="kubernetes.io/service-account-token",
            opts=self._k8s(depends_on=[base], additional_secret_outputs=["data"]),
        )
        self.reader_token_data = reader_token.data
        self.istiod_ready = readiness_of(istiod)
        self.ca_applied = pulumi.Output.all(cacerts.id, istiod.id)
        self.register_outputs({"namespace": self.namespace, "istiod_status": istiod.status})

    def _k8s(self, **kwargs: Any) -> pulumi.ResourceOptions:
        return _k8s_options(self, self._args.provider, **kwargs)

    def _release(
        self, chart: str, release_name: str, values: dict[str, Any], policy: ReleasePolicy,
        depends_on: list[pulumi.Resource],
    ) -> k8s.helm.v3.Release:
        return istio_release(
            f"{self._args.cluster_name}-{release_name}", chart, release_name, ISTIO_NAMESPACE, self._args.charts,
            values, policy, self._k8s(depends_on=depends_on),
        )


class EastWestGateway(pulumi.ComponentResource):
    """The east-west gateway release on the stack's NLB, and the cross-network Gateway that
    exposes the cluster's services to the other networks on 15443."""

    release_status: pulumi.Output[Any]
    # What the gateway runs: its chart version and Helm values (not the revision, which any
    # upgrade bumps, e.g. a changed Helm timeout).
    release_configuration: pulumi.Output[dict[str, Any]]

    def __init__(self, name: str, args: EastWestGatewayArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(EASTWEST_GATEWAY_TYPE, name, None, opts)
        cluster = args.cluster_name
        # The gateway's proxy image is injected by istiod's webhook, so the control plane comes
        # first; its pods need nodes. Not atomic: a slow NLB should not make Helm tear the Service
        # down and churn NLB services; the next `pulumi up` resumes the release.
        release = istio_release(
            f"{cluster}-{EASTWEST_GATEWAY}", "gateway", EASTWEST_GATEWAY, args.namespace, args.charts,
            eastwest_gateway_values(args.network, args.nlb_id, args.instance_pool_id, args.replicas),
            ReleasePolicy(args.charts.timeout_seconds, atomic=False),
            _k8s_options(self, args.provider, depends_on=[args.istiod_ready, args.nodes_ready]),
        )
        _custom_resource(
            f"{cluster}-cross-network-gateway", cross_network_gateway_manifest(),
            _k8s_options(self, args.provider, depends_on=[args.istiod_ready]),
        )
        self.release_status = release.status
        self.release_configuration = pulumi.Output.all(chart_version=release.version, values=release.values)
        self.register_outputs({"release_status": self.release_status})
