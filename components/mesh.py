"""Wires the components into the whole mesh; __main__.py and the benchmark both call build_mesh."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.cluster import MeshCluster, MeshClusterArgs
from components.config import PROJECT, MeshSettings
from components.demo import DemoCluster, ExoDemo, ExoDemoArgs, mesh_fingerprint
from components.istio import IstioControlPlane, IstioControlPlaneArgs
from components.kubeconfig import merge_kubeconfigs
from components.pki import MeshPki, MeshPkiArgs
from components.remote_access import RemoteCluster, RemoteSecrets, RemoteSecretsArgs


@dataclass(frozen=True)
class Mesh:
    clusters: dict[str, MeshCluster]
    pki: MeshPki
    control_planes: dict[str, IstioControlPlane]
    remote_secrets: RemoteSecrets
    demo: ExoDemo | None
    merged_kubeconfig: pulumi.Output[str]


def build_mesh(settings: MeshSettings, stack: str, root_key_pem: pulumi.Output[str] | None = None) -> Mesh:
    # Exoscale names are account-wide: they carry the project and the stack.
    name_prefix = f"{PROJECT}-{stack}"
    clusters = {
        c.name: MeshCluster(c.name, MeshClusterArgs(
            settings=c,
            name_prefix=name_prefix,
            mesh_id=settings.mesh_id,
            kubeconfig_ttl_seconds=settings.kubeconfig_ttl_seconds,
            kubeconfig_early_renewal_seconds=settings.kubeconfig_early_renewal_seconds,
            protect=settings.protect,
        ))
        for c in settings.clusters
    }
    pki = MeshPki("mesh-ca", MeshPkiArgs(
        settings=settings.pki,
        cluster_names=tuple(clusters),
        root_key_pem=root_key_pem,
        protect_root=settings.protect,
    ))
    control_planes = {
        c.name: IstioControlPlane(f"{c.name}-istio", IstioControlPlaneArgs(
            cluster_name=c.name,
            network=c.network,
            mesh_id=settings.mesh_id,
            istio_version=settings.istio_version,
            chart_repository=settings.istio_chart_repository,
            provider=clusters[c.name].provider,
            ca=pki.intermediates[c.name],
            eastwest_nlb_id=clusters[c.name].eastwest_nlb.id,
            instance_pool_id=clusters[c.name].instance_pool_id,
            helm_timeout_seconds=settings.helm.timeout_seconds,
            mtls_strict=settings.mtls_strict,
        ))
        for c in settings.clusters
    }
    remote_secrets = RemoteSecrets("remote-secrets", RemoteSecretsArgs(clusters=tuple(
        RemoteCluster(
            name=name,
            endpoint=clusters[name].endpoint,
            provider=clusters[name].provider,
            reader_token_data=control_plane.reader_token.data,
            namespace=control_plane.namespace.metadata.name,
            reader_rbac=control_plane.istiod,
        )
        for name, control_plane in control_planes.items()
    )))

    demo = None
    if settings.demo.enabled:
        fingerprint = pulumi.Output.all(
            pki.root_cert_pem, *(ca.cert_pem for ca in pki.intermediates.values())
        ).apply(lambda pems: mesh_fingerprint({
            "clusters": sorted(clusters),
            "istio_version": settings.istio_version,
            "mesh_id": settings.mesh_id,
            "certificates": sorted(pem or "" for pem in pems),
        }))
        demo = ExoDemo("exodemo", ExoDemoArgs(
            clusters=tuple(
                DemoCluster(
                    name=name,
                    zone=settings.cluster(name).zone,
                    provider=clusters[name].provider,
                    istiod=cp.istiod,
                    nodepool=clusters[name].nodepool,
                    instance_pool_id=clusters[name].instance_pool_id,
                )
                for name, cp in control_planes.items()
            ),
            server_cluster=settings.demo.server_cluster,
            client_cluster=settings.demo.client_cluster,
            curl_image=settings.demo.curl_image,
            smoke_test=settings.demo.smoke_test,
            mesh_dependencies=(
                *remote_secrets.secrets.values(),
                *(cp.eastwest_gateway for cp in control_planes.values()),
                *(cp.cross_network_gateway for cp in control_planes.values()),
            ),
            mesh_fingerprint=fingerprint,
            istio_version=settings.istio_version,
            chart_repository=settings.istio_chart_repository,
            name_prefix=name_prefix,
            helm_timeout_seconds=settings.helm.timeout_seconds,
            ingress_weights=settings.demo.ingress_weights,
        ))

    names = list(clusters)
    merged_kubeconfig = pulumi.Output.secret(
        pulumi.Output.all(*(clusters[n].kubeconfig for n in names)).apply(
            lambda texts: merge_kubeconfigs(dict(zip(names, texts, strict=True)))
        )
    )
    return Mesh(clusters, pki, control_planes, remote_secrets, demo, merged_kubeconfig)
