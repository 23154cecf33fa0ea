"""The demo's optional public ingress (the tutorial's "further ideas"): exo-webtest from the
internet through an ingress gateway in the server cluster, split across clusters by weight."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumiverse_exoscale as exoscale

from components.demo import DEMO_NAMESPACE, WEBTEST_NAME, WEBTEST_PORT
from components.istio import IstioCharts, ReleasePolicy, istio_release, stack_owned_load_balancer
from components.readiness import Readiness
from mesh_constants import DEMO_INGRESS_TYPE, INGRESS_GATEWAY


@dataclass(frozen=True)
class DemoIngressArgs:
    cluster_name: str
    zone: str
    provider: k8s.Provider
    # The cluster's exodemo namespace, where the gateway and its routes live.
    namespace: pulumi.Input[str]
    instance_pool_id: pulumi.Input[str]
    # The cluster's MeshCluster.nodes_ready: the NLB targets the nodes, so it goes before them on
    # destroy, and the gateway's pods need them.
    nodes_ready: Readiness
    # The cluster's IstioControlPlane.istiod_ready: the gateway's proxy is injected by istiod, and
    # istiod validates the routes.
    istiod_ready: Readiness
    charts: IstioCharts
    name_prefix: str
    # (cluster, percent) pairs summing to 100.
    weights: tuple[tuple[str, int], ...]


class DemoIngress(pulumi.ComponentResource):
    url: pulumi.Output[str]

    def __init__(self, name: str, args: DemoIngressArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(DEMO_INGRESS_TYPE, name, None, opts)
        cluster = args.cluster_name
        # Owned by the stack, like the east-west NLBs, so `pulumi destroy` leaves none behind.
        nlb = exoscale.Nlb(
            f"{cluster}-exodemo-ingress",
            zone=args.zone,
            name=f"{args.name_prefix}-{cluster}-exodemo-ingress",
            description="exodemo ingress gateway",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.nodes_ready]),
        )
        gateway_release = istio_release(
            f"{cluster}-{INGRESS_GATEWAY}", "gateway", INGRESS_GATEWAY, args.namespace, args.charts,
            {"name": INGRESS_GATEWAY, "service": stack_owned_load_balancer(nlb.id, args.instance_pool_id)},
            ReleasePolicy(args.charts.timeout_seconds, atomic=False),
            pulumi.ResourceOptions(
                parent=self, provider=args.provider, depends_on=[args.istiod_ready, args.nodes_ready]
            ),
        )
        webtest_host = f"{WEBTEST_NAME}.{DEMO_NAMESPACE}.svc.cluster.local"
        for manifest in ingress_manifests(webtest_host, args.weights):
            k8s.apiextensions.CustomResource(
                f"{cluster}-exodemo-{manifest['kind'].lower()}",
                api_version=manifest["apiVersion"],
                kind=manifest["kind"],
                metadata={**manifest["metadata"], "namespace": args.namespace},
                spec=manifest["spec"],
                opts=pulumi.ResourceOptions(
                    parent=self, provider=args.provider, depends_on=[args.istiod_ready, gateway_release]
                ),
            )
        self.url = nlb.ip_address.apply(lambda ip: f"http://{ip}/")
        self.register_outputs({"url": self.url})


def ingress_manifests(webtest_host: str, weights: tuple[tuple[str, int], ...]) -> list[dict[str, Any]]:
    """Gateway, DestinationRule with one subset per cluster, and the weighted VirtualService."""
    return [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "exodemo-ingress"},
            "spec": {
                "selector": {"istio": "ingressgateway"},
                "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": WEBTEST_NAME},
            "spec": {
                "host": webtest_host,
                # istiod labels every endpoint with the cluster it runs in.
                "subsets": [{"name": cluster, "labels": {"topology.istio.io/cluster": cluster}}
                            for cluster, _ in weights],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": WEBTEST_NAME},
            "spec": {
                "hosts": ["*"],
                "gateways": ["exodemo-ingress"],
                "http": [{"route": [
                    {"destination": {"host": webtest_host, "subset": cluster, "port": {"number": WEBTEST_PORT}},
                     "weight": weight}
                    for cluster, weight in weights
                ]}],
            },
        },
    ]
