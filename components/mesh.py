"""The whole mesh as one component: clusters, PKI, control planes, remote secrets and the demo."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from components.cluster import MeshCluster, MeshClusterArgs
from components.config import MeshSettings
from components.demo import DemoApp, DemoAppArgs, DemoCluster
from components.demo_ingress import DemoIngress, DemoIngressArgs
from components.istio import (
    EastWestGateway,
    EastWestGatewayArgs,
    IstioCharts,
    IstioControlPlane,
    IstioControlPlaneArgs,
)
from components.kubeconfig import merge_kubeconfigs
from components.pki import MeshPki, MeshPkiArgs
from components.remote_access import RemoteCluster, RemoteSecrets, RemoteSecretsArgs
from components.rotation import (
    STATE_OUTPUT,
    cluster_state,
    deployed_from_outputs,
    desired_ca,
    skipped_phase,
    state_output,
    trusted_generations,
)
from components.smoke_test import SmokeTest, SmokeTestArgs, mesh_fingerprint
from mesh_constants import MESH_TYPE, PROJECT


@dataclass(frozen=True)
class MeshArgs:
    settings: MeshSettings
    # The Pulumi stack: Exoscale names are account-wide, so they carry the project and the stack.
    stack: str
    # Bring-your-own root: its key as a secret Output (from config); None to generate a root.
    root_key_pem: pulumi.Input[str] | None = None
    # The organization of the stack's backend (`organization` on a file or S3 backend), for the reference
    # to the stack's own last deployment.
    organization: str = "organization"


class Mesh(pulumi.ComponentResource):
    # Per cluster: endpoint, zone, network and the east-west gateway's public IP.
    clusters: dict[str, dict[str, pulumi.Input[str]]]
    # Secret: one admin context per cluster, named after the cluster.
    kubeconfig: pulumi.Output[str]
    root_cert_pem: pulumi.Output[str]
    # What the deployment applied to each cluster's CA (components/rotation.py): exported as meshCaState
    # and read back by the next deployment to refuse a skipped rotation phase.
    ca_state: pulumi.Output[dict[str, Any]]
    # None without the demo; the ingress URL also None without demoIngressWeights.
    demo_curl_command: str | None
    demo_ingress_url: pulumi.Output[str] | None

    def __init__(self, name: str, args: MeshArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(MESH_TYPE, name, None, opts)
        settings = args.settings
        name_prefix = f"{PROJECT}-{args.stack}"
        child = pulumi.ResourceOptions(parent=self)
        charts = IstioCharts(settings.istio_version, settings.istio_chart_repository, settings.helm_timeout_seconds)

        clusters = {
            c.name: MeshCluster(c.name, MeshClusterArgs(
                settings=c,
                name_prefix=name_prefix,
                mesh_id=settings.mesh_id,
                kubeconfig_ttl_seconds=settings.kubeconfig_ttl_seconds,
                kubeconfig_early_renewal_seconds=settings.kubeconfig_early_renewal_seconds,
                protect=settings.protect,
            ), child)
            for c in settings.clusters
        }
        desired = desired_ca(settings)
        # The stack's own last deployment (none yet for a new stack): a rotation phase is checked against
        # what was applied, not against the previous config.
        last = pulumi.StackReference(
            "mesh-last-deployment", stack_name=f"{args.organization}/{PROJECT}/{args.stack}", opts=child)

        def allowed(outputs: list[Any]) -> bool:
            problem = skipped_phase(
                deployed_from_outputs({STATE_OUTPUT: outputs[0], "clusters": outputs[1]}, settings), settings)
            if problem:
                raise pulumi.RunError(problem)
            return True

        # By name, so that the secret outputs (the kubeconfig) do not make the gate, and so every
        # certificate behind it, secret.
        gate = pulumi.Output.all(last.get_output(STATE_OUTPUT), last.get_output("clusters")).apply(allowed)
        root_key_pems: dict[int, pulumi.Output[str]] = {}
        if args.root_key_pem is not None:
            root_key_pems[settings.root_ca_generation] = pulumi.Output.secret(args.root_key_pem)
        rotation = settings.root_ca_rotation
        if rotation is not None and rotation.root_ca_key_pem is not None:
            root_key_pems[rotation.to_generation] = pulumi.Output.secret(rotation.root_ca_key_pem.get_secret_value())
        pki = MeshPki("mesh-ca", MeshPkiArgs(
            settings=settings.pki,
            cluster_names=tuple(clusters),
            trusted_generations=trusted_generations(settings),
            issuing_generations={name: ca.issuing for name, ca in desired.items()},
            root_key_pems=root_key_pems,
            protect_root=settings.protect,
            gate=gate,
        ), child)
        control_planes = {
            c.name: IstioControlPlane(f"{c.name}-istio", IstioControlPlaneArgs(
                cluster_name=c.name,
                network=c.network,
                mesh_id=settings.mesh_id,
                charts=charts,
                provider=clusters[c.name].provider,
                ca=pki.intermediates[c.name],
                nodes_ready=clusters[c.name].nodes_ready,
                replicas=settings.istiod_replicas,
                mtls_strict=settings.mtls_strict,
                multi_root_trust=settings.multi_root_trust,
            ), child)
            for c in settings.clusters
        }
        gateways = {
            c.name: EastWestGateway(f"{c.name}-eastwest-gateway", EastWestGatewayArgs(
                cluster_name=c.name,
                network=c.network,
                charts=charts,
                provider=clusters[c.name].provider,
                namespace=control_planes[c.name].namespace,
                istiod_ready=control_planes[c.name].istiod_ready,
                nlb_id=clusters[c.name].eastwest_nlb_id,
                instance_pool_id=clusters[c.name].instance_pool_id,
                nodes_ready=clusters[c.name].nodes_ready,
                replicas=settings.eastwest_gateway_replicas,
            ), child)
            for c in settings.clusters
        }
        remote_secrets = RemoteSecrets("remote-secrets", RemoteSecretsArgs(clusters=tuple(
            RemoteCluster(
                name=name,
                endpoint=clusters[name].endpoint,
                provider=clusters[name].provider,
                reader_token_data=control_plane.reader_token_data,
                namespace=control_plane.namespace,
                reader_rbac=control_plane,
            )
            for name, control_plane in control_planes.items()
        )), child)

        self.demo_curl_command = None
        self.demo_ingress_url = None
        if settings.demo_enabled:
            app = DemoApp("exodemo", DemoAppArgs(
                clusters=tuple(
                    DemoCluster(
                        name=name, provider=clusters[name].provider, istiod_ready=control_plane.istiod_ready,
                        nodes_ready=clusters[name].nodes_ready,
                    )
                    for name, control_plane in control_planes.items()
                ),
                server_cluster=settings.demo_server_cluster,
                client_cluster=settings.demo_client_cluster,
                curl_image=settings.curl_image,
                extra_webtest_clusters=tuple(sorted(settings.demo_ingress_weights)),
            ), child)
            self.demo_curl_command = app.curl_command
            if settings.smoke_test:
                # Everything the test proves, so that a change to any of it runs the test again.
                fingerprint = pulumi.Output.from_input({
                    "certificates": [pki.root_cert_pem, *(ca.cert_pem for ca in pki.intermediates.values())],
                    "eastwest_ips": {name: cluster.eastwest_ip for name, cluster in clusters.items()},
                    "gateways": {name: gateway.release_configuration for name, gateway in gateways.items()},
                    # What the remote secrets hold but the reader tokens, which are secret and so
                    # stay out of the Job's public name.
                    "remote_secrets": {
                        "names": sorted(remote_secrets.secret_names),
                        "endpoints": {name: cluster.endpoint for name, cluster in clusters.items()},
                        "cas": remote_secrets.target_cas,
                    },
                }).apply(lambda parts: mesh_fingerprint({
                    **parts,
                    "clusters": sorted(clusters),
                    "istio_version": settings.istio_version,
                    "mesh_id": settings.mesh_id,
                    "certificates": sorted(pem or "" for pem in parts["certificates"]),
                }))
                SmokeTest("exodemo-smoke-test", SmokeTestArgs(
                    cluster_name=settings.demo_client_cluster,
                    provider=clusters[settings.demo_client_cluster].provider,
                    namespace=app.namespaces[settings.demo_client_cluster],
                    curl_image=settings.curl_image,
                    mesh_fingerprint=fingerprint,
                    proves=(app, *gateways.values(), remote_secrets),
                    nodes_ready=clusters[settings.demo_client_cluster].nodes_ready,
                ), child)
            if settings.demo_ingress_weights:
                server = settings.demo_server_cluster
                self.demo_ingress_url = DemoIngress("exodemo-ingress", DemoIngressArgs(
                    cluster_name=server,
                    zone=settings.cluster(server).zone,
                    provider=clusters[server].provider,
                    namespace=app.namespaces[server],
                    instance_pool_id=clusters[server].instance_pool_id,
                    nodes_ready=clusters[server].nodes_ready,
                    istiod_ready=control_planes[server].istiod_ready,
                    charts=charts,
                    name_prefix=name_prefix,
                    weights=tuple(sorted(settings.demo_ingress_weights.items())),
                ), child).url

        self.clusters = {
            name: {
                "endpoint": cluster.endpoint,
                "zone": settings.cluster(name).zone,
                "network": settings.cluster(name).network,
                "eastwestGatewayIp": cluster.eastwest_ip,
            }
            for name, cluster in clusters.items()
        }
        names = list(clusters)
        self.kubeconfig = pulumi.Output.secret(
            pulumi.Output.all(*(clusters[n].kubeconfig for n in names)).apply(
                lambda texts: merge_kubeconfigs(dict(zip(names, texts, strict=True)))
            )
        )
        self.root_cert_pem = pki.root_cert_pem
        # Each cluster's part resolves only once its cacerts and istiod are applied: a failed step
        # exports nothing, and the stack keeps the last deployment's state.
        self.ca_state = pulumi.Output.from_input({
            **state_output(settings),
            "roots": {str(generation): pem for generation, pem in pki.root_cert_pems.items()},
            "clusters": {
                name: pulumi.Output.all(control_planes[name].ca_applied, pki.intermediates[name].cert_pem).apply(
                    lambda parts, ca=desired[name]: {**cluster_state(ca), "intermediateCertPem": parts[1]})
                for name in clusters
            },
        })
        self.register_outputs({
            "clusters": self.clusters,
            "kubeconfig": self.kubeconfig,
            "root_cert_pem": self.root_cert_pem,
            "ca_state": self.ca_state,
            "demo_curl_command": self.demo_curl_command,
            "demo_ingress_url": self.demo_ingress_url,
        })
