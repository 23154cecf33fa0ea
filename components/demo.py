"""The exodemo app: exo-webtest in the server cluster (and in every cluster the optional ingress
sends traffic to) and a curl client in another cluster that calls it by its short name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.readiness import Readiness
from mesh_constants import DEMO_APP_TYPE

DEMO_NAMESPACE = "exodemo"
WEBTEST_NAME = "exo-webtest"
WEBTEST_IMAGE = "exo.container-registry.com/exoscale-images/exo-webtest:v2"
WEBTEST_PORT = 3000
WEBTEST_URL = f"http://{WEBTEST_NAME}:{WEBTEST_PORT}/"
CLIENT_NAME = "curl"


@dataclass(frozen=True)
class DemoCluster:
    name: str
    provider: k8s.Provider
    # The cluster's IstioControlPlane.istiod_ready: sidecar injection needs istiod's webhook, so the
    # namespace waits.
    istiod_ready: Readiness
    # The cluster's MeshCluster.nodes_ready: pods need nodes (the provider does not wait for them).
    nodes_ready: Readiness


@dataclass(frozen=True)
class DemoAppArgs:
    clusters: tuple[DemoCluster, ...]
    server_cluster: str
    client_cluster: str
    curl_image: str
    # Clusters that also run exo-webtest (the optional ingress's weighted targets).
    extra_webtest_clusters: tuple[str, ...] = ()


def webtest_container() -> dict[str, Any]:
    probe = {"httpGet": {"path": "/", "port": WEBTEST_PORT}, "periodSeconds": 10}
    return {
        "name": WEBTEST_NAME,
        "image": WEBTEST_IMAGE,
        "ports": [{"name": "http", "containerPort": WEBTEST_PORT}],
        "readinessProbe": {**probe, "initialDelaySeconds": 2},
        "livenessProbe": {**probe, "initialDelaySeconds": 10},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
    }


def curl_container(image: str) -> dict[str, Any]:
    return {
        "name": CLIENT_NAME,
        "image": image,
        "command": ["sleep", "infinity"],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
    }


def app_labels(app: str) -> dict[str, str]:
    return {"app": app}


class DemoApp(pulumi.ComponentResource):
    # The exodemo namespace's name in each cluster, for what else runs there (smoke test, ingress).
    namespaces: dict[str, pulumi.Output[str]]
    curl_command: str

    def __init__(self, name: str, args: DemoAppArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(DEMO_APP_TYPE, name, None, opts)
        self._clusters = {c.name: c for c in args.clusters}
        self.namespaces = {
            c.name: k8s.core.v1.Namespace(
                f"{c.name}-{DEMO_NAMESPACE}",
                metadata={"name": DEMO_NAMESPACE, "labels": {"istio-injection": "enabled"}},
                opts=pulumi.ResourceOptions(parent=self, provider=c.provider, depends_on=[c.istiod_ready]),
            ).metadata.name
            for c in args.clusters
        }
        for cluster in dict.fromkeys((args.server_cluster, *args.extra_webtest_clusters)):
            self._webtest(self._clusters[cluster])

        client = self._clusters[args.client_cluster]
        self._deployment(
            client, CLIENT_NAME, {"containers": [curl_container(args.curl_image)], "terminationGracePeriodSeconds": 1}
        )
        self.curl_command = (
            f"kubectl --kubeconfig kubeconfig.yaml --context {client.name} -n {DEMO_NAMESPACE} "
            f"exec deploy/{CLIENT_NAME} -c {CLIENT_NAME} -- curl -sS {WEBTEST_URL}"
        )
        self.register_outputs({"curl_command": self.curl_command})

    def _opts(self, cluster: DemoCluster, **kwargs: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, provider=cluster.provider, **kwargs)

    def _deployment(self, cluster: DemoCluster, app: str, pod_spec: dict[str, Any]) -> None:
        """One replica of `app` in the cluster's exodemo namespace."""
        k8s.apps.v1.Deployment(
            f"{cluster.name}-{app}",
            metadata={"name": app, "namespace": self.namespaces[cluster.name], "labels": app_labels(app)},
            spec={
                "replicas": 1,
                "selector": {"matchLabels": app_labels(app)},
                "template": {"metadata": {"labels": app_labels(app)}, "spec": pod_spec},
            },
            opts=self._opts(cluster, depends_on=[cluster.nodes_ready]),  # its pod needs nodes
        )

    def _webtest(self, cluster: DemoCluster) -> None:
        self._deployment(cluster, WEBTEST_NAME, {"containers": [webtest_container()]})
        k8s.core.v1.Service(
            f"{cluster.name}-{WEBTEST_NAME}-service",
            metadata={
                "name": WEBTEST_NAME, "namespace": self.namespaces[cluster.name], "labels": app_labels(WEBTEST_NAME),
            },
            spec={
                "type": "ClusterIP",
                "selector": app_labels(WEBTEST_NAME),
                "ports": [{"name": "http", "port": WEBTEST_PORT, "targetPort": WEBTEST_PORT}],
            },
            opts=self._opts(cluster),
        )
