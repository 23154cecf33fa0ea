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

ISTIO_NAMESPACE = "istio-system"
NETWORK_LABEL = "topology.istio.io/network"
EASTWEST_GATEWAY = "istio-eastwestgateway"
EASTWEST_SELECTOR = {"istio": "eastwestgateway"}
READER_SERVICE_ACCOUNT = "istio-reader-service-account"
READER_TOKEN_SECRET = "istio-reader-service-account-istio-remote-secret-token"
CCM_ANNOTATION = "service.beta.kubernetes.io/exoscale-loadbalancer-"
# The base chart only installs CRDs and RBAC: it is quick, or something is badly wrong.
BASE_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class ReleasePolicy:
    """How a Helm release behaves when an install or upgrade fails (README: Helm failure policy)."""

    timeout_seconds: int
    # Roll a failed upgrade back (and purge a failed install) so the previous control plane keeps
    # serving; Helm then needs no manual `helm rollback` before the next `pulumi up`.
    atomic: bool


@dataclass(frozen=True)
class IstioControlPlaneArgs:
    cluster_name: str
    network: str
    mesh_id: str
    istio_version: str
    # Where Helm fetches the charts from, at every preview as well as at up.
    chart_repository: str
    provider: k8s.Provider
    ca: IntermediateCa
    eastwest_nlb_id: pulumi.Input[str]
    instance_pool_id: pulumi.Input[str]
    helm_timeout_seconds: int
    mtls_strict: bool = True


def istiod_values(cluster_name: str, network: str, mesh_id: str) -> dict[str, Any]:
    return {
        "global": {
            "meshID": mesh_id,
            "multiCluster": {"clusterName": cluster_name},
            "network": network,
        },
        # DNS proxying lets a client resolve a Service that only exists in another cluster.
        # ISTIO_META_DNS_AUTO_ALLOCATE is deprecated since 1.25: istiod allocates addresses itself.
        "meshConfig": {"defaultConfig": {"proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true"}}},
        # The chart asks for 2 GiB; a standard.medium node has 4 GiB for everything.
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}},
        "autoscaleMin": 1,
    }


def eastwest_gateway_values(
    network: str, nlb_id: pulumi.Input[str], instance_pool_id: pulumi.Input[str]
) -> dict[str, Any]:
    return {
        "name": EASTWEST_GATEWAY,
        # networkGateway sets the four fixed ports, the network labels and the requested network view.
        "networkGateway": network,
        "service": stack_owned_load_balancer(nlb_id, instance_pool_id),
    }


def istio_release(
    resource_name: str, chart: str, release_name: str, namespace: pulumi.Input[str], version: str,
    repository: str, values: dict[str, Any], policy: ReleasePolicy, opts: pulumi.ResourceOptions,
) -> k8s.helm.v3.Release:
    """A release of one of Istio's charts at the mesh's pinned version."""
    return k8s.helm.v3.Release(
        resource_name,
        name=release_name,  # a fixed name: Pulumi's random suffix would break the gateway selector
        chart=chart,
        version=version,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repository),
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


class IstioControlPlane(pulumi.ComponentResource):
    namespace: k8s.core.v1.Namespace
    istiod: k8s.helm.v3.Release
    eastwest_gateway: k8s.helm.v3.Release
    cross_network_gateway: k8s.apiextensions.CustomResource
    reader_token: k8s.core.v1.Secret

    def __init__(self, name: str, args: IstioControlPlaneArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sks-istio-mesh:istio:IstioControlPlane", name, None, opts)
        self._name = name
        self._args = args

        self.namespace = k8s.core.v1.Namespace(
            f"{name}-istio-system",
            metadata={"name": ISTIO_NAMESPACE, "labels": {NETWORK_LABEL: args.network}},
            opts=self._k8s(),
        )
        namespace = self.namespace.metadata.name
        # istiod only uses a plugged-in CA that exists when it starts; otherwise it signs with a
        # self-signed root of its own and cross-cluster mTLS fails.
        self.cacerts = k8s.core.v1.Secret(
            f"{name}-cacerts",
            metadata={"name": "cacerts", "namespace": namespace},
            string_data=pulumi.Output.secret({
                "ca-cert.pem": args.ca.cert_pem,
                "ca-key.pem": args.ca.key_pem,
                "root-cert.pem": args.ca.root_cert_pem,
                "cert-chain.pem": args.ca.chain_pem,
            }),
            opts=self._k8s(),
        )
        self.base = self._release(
            "base", "istio-base", {"defaultRevision": "default"},
            ReleasePolicy(BASE_TIMEOUT_SECONDS, atomic=True), depends_on=[self.namespace],
        )
        self.istiod = self._release(
            "istiod", "istiod", istiod_values(args.cluster_name, args.network, args.mesh_id),
            ReleasePolicy(args.helm_timeout_seconds, atomic=True), depends_on=[self.base, self.cacerts],
        )
        # The gateway's proxy image is injected by istiod's webhook, so istiod comes first. Not
        # atomic: a slow NLB should not make Helm tear the Service down and churn NLB services;
        # the next `pulumi up` resumes the release.
        self.eastwest_gateway = self._release(
            "gateway", EASTWEST_GATEWAY,
            eastwest_gateway_values(args.network, args.eastwest_nlb_id, args.instance_pool_id),
            ReleasePolicy(args.helm_timeout_seconds, atomic=False), depends_on=[self.istiod],
        )
        self.cross_network_gateway = self._custom_resource(
            "cross-network-gateway", cross_network_gateway_manifest(), depends_on=[self.istiod]
        )
        self.strict_mtls = (
            self._custom_resource("strict-mtls", strict_mtls_manifest(), depends_on=[self.istiod])
            if args.mtls_strict else None
        )
        # A long-lived token for the reader service account that the base chart creates; peers'
        # remote secrets are built from it.
        self.reader_token = k8s.core.v1.Secret(
            f"{name}-reader-token",
            metadata={
                "name": READER_TOKEN_SECRET,
                "namespace": namespace,
                "annotations": {"kubernetes.io/service-account.name": READER_SERVICE_ACCOUNT},
            },
            type="kubernetes.io/service-account-token",
            opts=self._k8s(depends_on=[self.base], additional_secret_outputs=["data"]),
        )
        self.register_outputs({
            "namespace": namespace,
            "istiod_status": self.istiod.status,
            "eastwest_gateway_status": self.eastwest_gateway.status,
        })

    def _k8s(self, **kwargs: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, provider=self._args.provider, **kwargs)

    def _release(
        self, chart: str, release_name: str, values: dict[str, Any], policy: ReleasePolicy,
        depends_on: list[pulumi.Resource],
    ) -> k8s.helm.v3.Release:
        return istio_release(
            f"{self._name}-{release_name}", chart, release_name, ISTIO_NAMESPACE, self._args.istio_version,
            self._args.chart_repository, values, policy, self._k8s(depends_on=depends_on),
        )

    def _custom_resource(
        self, suffix: str, manifest: dict[str, Any], depends_on: list[pulumi.Resource]
    ) -> k8s.apiextensions.CustomResource:
        return k8s.apiextensions.CustomResource(
            f"{self._name}-{suffix}",
            api_version=manifest["apiVersion"],
            kind=manifest["kind"],
            metadata=manifest["metadata"],
            spec=manifest["spec"],
            opts=self._k8s(depends_on=depends_on),
        )
