"""The exodemo app: exo-webtest in the server cluster, a curl client in another, a smoke-test Job
that makes `pulumi up` fail unless the client reaches the server across the mesh, and an optional
public ingress that splits traffic across the clusters running exo-webtest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumiverse_exoscale as exoscale

from components.istio import ReleasePolicy, istio_release, stack_owned_load_balancer

DEMO_NAMESPACE = "exodemo"
WEBTEST_NAME = "exo-webtest"
WEBTEST_IMAGE = "exo.container-registry.com/exoscale-images/exo-webtest:v2"
WEBTEST_PORT = 3000
WEBTEST_URL = f"http://{WEBTEST_NAME}:{WEBTEST_PORT}/"
EXPECTED_GREETING = "Hello World from host exo-webtest"
CLIENT_NAME = "curl"
INGRESS_GATEWAY = "istio-ingressgateway"
SMOKE_ATTEMPTS = 30
SMOKE_DELAY_SECONDS = 10
# Room for every attempt (5 s curl timeout + the delay) plus pod and sidecar start-up.
SMOKE_DEADLINE_SECONDS = SMOKE_ATTEMPTS * (SMOKE_DELAY_SECONDS + 6) + 120
# Pulumi waits longer than the Job's deadline, so a failure shows the script's own message
# rather than Pulumi's 10-minute default timeout.
SMOKE_AWAIT = f"{SMOKE_DEADLINE_SECONDS // 60 + 5}m"


@dataclass(frozen=True)
class DemoCluster:
    name: str
    zone: str
    provider: k8s.Provider
    # Sidecar injection needs istiod's webhook, so the namespace waits for it.
    istiod: pulumi.Resource
    # Pods need nodes (the provider does not wait for them), and the optional ingress gateway's
    # NLB must go before the nodes it targets.
    nodepool: pulumi.Resource
    instance_pool_id: pulumi.Input[str]


@dataclass(frozen=True)
class ExoDemoArgs:
    clusters: tuple[DemoCluster, ...]
    server_cluster: str
    client_cluster: str
    curl_image: str
    smoke_test: bool
    # Everything the smoke test proves: remote secrets, gateways, cross-network Gateways.
    mesh_dependencies: tuple[pulumi.Resource, ...]
    # Changes whenever the mesh does (clusters, Istio version, certificates); the smoke test's
    # name carries it, so the test runs again exactly then.
    mesh_fingerprint: pulumi.Input[str]
    istio_version: str
    chart_repository: str
    name_prefix: str
    helm_timeout_seconds: int
    # Public ingress with weighted routing across clusters (cluster, percent); empty = none.
    ingress_weights: tuple[tuple[str, int], ...] = ()


def mesh_fingerprint(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]


def smoke_test_script() -> str:
    return f"""set -u
url={WEBTEST_URL}
body=""
for attempt in $(seq 1 {SMOKE_ATTEMPTS}); do
  body=$(curl -sS --max-time 5 "$url" 2>&1) && case "$body" in
    *"{EXPECTED_GREETING}"*) echo "attempt $attempt: $url answered: $body"; ok=1; break;;
  esac
  echo "attempt $attempt: $url answered: $body" >&2
  sleep {SMOKE_DELAY_SECONDS}
done
# Let the sidecar exit even where native sidecars are off, so the Job can complete.
curl -fsS -X POST http://127.0.0.1:15020/quitquitquit >/dev/null 2>&1 || true
if [ "${{ok:-0}}" = 1 ]; then exit 0; fi
msg="cross-cluster smoke test failed: called $url {SMOKE_ATTEMPTS} times, \
expected '{EXPECTED_GREETING}', last answer: $body"
echo "$msg" | tee "${{TERMINATION_LOG:-/dev/termination-log}}" >&2
exit 1
"""


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


def _labels(app: str) -> dict[str, str]:
    return {"app": app}


class ExoDemo(pulumi.ComponentResource):
    namespaces: dict[str, k8s.core.v1.Namespace]
    smoke_test: k8s.batch.v1.Job | None
    ingress_url: pulumi.Output[str] | None

    def __init__(self, name: str, args: ExoDemoArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sks-istio-mesh:demo:ExoDemo", name, None, opts)
        self._clusters = {c.name: c for c in args.clusters}
        self.namespaces = {
            c.name: k8s.core.v1.Namespace(
                f"{c.name}-{DEMO_NAMESPACE}",
                metadata={"name": DEMO_NAMESPACE, "labels": {"istio-injection": "enabled"}},
                opts=pulumi.ResourceOptions(parent=self, provider=c.provider, depends_on=[c.istiod]),
            )
            for c in args.clusters
        }
        server = self._clusters[args.server_cluster]
        client = self._clusters[args.client_cluster]
        webtest_clusters = dict.fromkeys((server.name, *(cluster for cluster, _ in args.ingress_weights)))
        self.webtest = {cluster: self._webtest(self._clusters[cluster]) for cluster in webtest_clusters}

        self.client_deployment = self._deployment(
            client, CLIENT_NAME, {"containers": [curl_container(args.curl_image)], "terminationGracePeriodSeconds": 1}
        )
        self.curl_command = (
            f"kubectl --kubeconfig kubeconfig.yaml --context {client.name} -n {DEMO_NAMESPACE} "
            f"exec deploy/{CLIENT_NAME} -c {CLIENT_NAME} -- curl -sS {WEBTEST_URL}"
        )
        self.smoke_test = self._smoke_test(client, args) if args.smoke_test else None
        self.ingress_url = self._ingress(server, args) if args.ingress_weights else None
        self.register_outputs({"curl_command": self.curl_command, "ingress_url": self.ingress_url})

    def _opts(self, cluster: DemoCluster, **kwargs: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, provider=cluster.provider, **kwargs)

    def _namespace(self, cluster: DemoCluster) -> pulumi.Output[str]:
        return self.namespaces[cluster.name].metadata.name

    def _deployment(self, cluster: DemoCluster, app: str, pod_spec: dict[str, Any]) -> k8s.apps.v1.Deployment:
        """One replica of `app` in the cluster's exodemo namespace."""
        return k8s.apps.v1.Deployment(
            f"{cluster.name}-{app}",
            metadata={"name": app, "namespace": self._namespace(cluster), "labels": _labels(app)},
            spec={
                "replicas": 1,
                "selector": {"matchLabels": _labels(app)},
                "template": {"metadata": {"labels": _labels(app)}, "spec": pod_spec},
            },
            opts=self._opts(cluster, depends_on=[cluster.nodepool]),  # its pod needs nodes
        )

    def _webtest(self, cluster: DemoCluster) -> tuple[k8s.apps.v1.Deployment, k8s.core.v1.Service]:
        deployment = self._deployment(cluster, WEBTEST_NAME, {"containers": [webtest_container()]})
        service = k8s.core.v1.Service(
            f"{cluster.name}-{WEBTEST_NAME}-service",
            metadata={"name": WEBTEST_NAME, "namespace": self._namespace(cluster), "labels": _labels(WEBTEST_NAME)},
            spec={
                "type": "ClusterIP",
                "selector": _labels(WEBTEST_NAME),
                "ports": [{"name": "http", "port": WEBTEST_PORT, "targetPort": WEBTEST_PORT}],
            },
            opts=self._opts(cluster),
        )
        return deployment, service

    def _smoke_test(self, client: DemoCluster, args: ExoDemoArgs) -> k8s.batch.v1.Job:
        webtest = [resource for pair in self.webtest.values() for resource in pair]
        return k8s.batch.v1.Job(
            f"{client.name}-exodemo-smoke-test",
            metadata={
                "name": pulumi.Output.from_input(args.mesh_fingerprint).apply(
                    lambda fingerprint: f"exodemo-smoke-{fingerprint}"
                ),
                "namespace": self._namespace(client),
                "labels": _labels("exodemo-smoke-test"),
                # A failed test is run again by the next `pulumi up` instead of being awaited forever.
                "annotations": {"pulumi.com/replaceUnready": "true"},
            },
            spec={
                "backoffLimit": 1,
                "activeDeadlineSeconds": SMOKE_DEADLINE_SECONDS,
                "template": {
                    "metadata": {
                        "labels": _labels("exodemo-smoke-test"),
                        "annotations": {
                            # The proxy runs as a native sidecar that Kubernetes stops when the
                            # test ends, and the test starts only once the proxy is ready.
                            "sidecar.istio.io/nativeSidecar": "true",
                            "proxy.istio.io/config": json.dumps({"holdApplicationUntilProxyStarts": True}),
                        },
                    },
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{
                            **curl_container(args.curl_image),
                            "name": "smoke-test",
                            "command": ["sh", "-c", smoke_test_script()],
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                        }],
                    },
                },
            },
            opts=self._opts(
                client,
                depends_on=[*args.mesh_dependencies, *webtest, client.nodepool],  # its pod needs nodes
                custom_timeouts=pulumi.CustomTimeouts(create=SMOKE_AWAIT, update=SMOKE_AWAIT),
            ),
        )

    def _ingress(self, server: DemoCluster, args: ExoDemoArgs) -> pulumi.Output[str]:
        """The tutorial's "further ideas": exo-webtest from the internet through an ingress
        gateway in the server cluster, split across clusters by weight."""
        # Owned by the stack, like the east-west NLBs, so `pulumi destroy` leaves none behind.
        nlb = exoscale.Nlb(
            f"{server.name}-exodemo-ingress",
            zone=server.zone,
            name=f"{args.name_prefix}-{server.name}-exodemo-ingress",
            description="exodemo ingress gateway",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[server.nodepool]),
        )
        gateway_release = istio_release(
            f"{server.name}-{INGRESS_GATEWAY}", "gateway", INGRESS_GATEWAY, DEMO_NAMESPACE, args.istio_version,
            args.chart_repository,
            {"name": INGRESS_GATEWAY, "service": stack_owned_load_balancer(nlb.id, server.instance_pool_id)},
            ReleasePolicy(args.helm_timeout_seconds, atomic=False),
            self._opts(server, depends_on=[self.namespaces[server.name], server.istiod, server.nodepool]),
        )
        webtest_host = f"{WEBTEST_NAME}.{DEMO_NAMESPACE}.svc.cluster.local"
        for manifest in ingress_manifests(webtest_host, args.ingress_weights):
            k8s.apiextensions.CustomResource(
                f"{server.name}-exodemo-{manifest['kind'].lower()}",
                api_version=manifest["apiVersion"],
                kind=manifest["kind"],
                metadata={**manifest["metadata"], "namespace": self._namespace(server)},
                spec=manifest["spec"],
                opts=self._opts(server, depends_on=[server.istiod, gateway_release]),
            )
        return nlb.ip_address.apply(lambda ip: f"http://{ip}/")


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
