"""The exodemo app: exo-webtest in one cluster, a curl client in another, and a smoke-test Job
that makes `pulumi up` fail unless the client reaches the server across the mesh."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

DEMO_NAMESPACE = "exodemo"
WEBTEST_NAME = "exo-webtest"
WEBTEST_IMAGE = "exo.container-registry.com/exoscale-images/exo-webtest:v2"
WEBTEST_PORT = 3000
WEBTEST_URL = f"http://{WEBTEST_NAME}:{WEBTEST_PORT}/"
EXPECTED_GREETING = "Hello World from host exo-webtest"
CLIENT_NAME = "curl"
SMOKE_ATTEMPTS = 30
SMOKE_DELAY_SECONDS = 10


@dataclass(frozen=True)
class DemoCluster:
    name: str
    provider: k8s.Provider
    # Sidecar injection needs istiod's webhook, so the namespace waits for it.
    istiod: pulumi.Resource


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

    def __init__(self, name: str, args: ExoDemoArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sks-istio-mesh:demo:ExoDemo", name, None, opts)
        clusters = {c.name: c for c in args.clusters}
        self.namespaces = {
            c.name: k8s.core.v1.Namespace(
                f"{c.name}-{DEMO_NAMESPACE}",
                metadata={"name": DEMO_NAMESPACE, "labels": {"istio-injection": "enabled"}},
                opts=pulumi.ResourceOptions(parent=self, provider=c.provider, depends_on=[c.istiod]),
            )
            for c in args.clusters
        }
        server = clusters[args.server_cluster]
        client = clusters[args.client_cluster]

        def opts(cluster: DemoCluster, **kwargs: Any) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, provider=cluster.provider, **kwargs)

        def namespace_of(cluster: DemoCluster) -> pulumi.Output[str]:
            return self.namespaces[cluster.name].metadata.name

        self.server_deployment = k8s.apps.v1.Deployment(
            f"{server.name}-{WEBTEST_NAME}",
            metadata={"name": WEBTEST_NAME, "namespace": namespace_of(server), "labels": _labels(WEBTEST_NAME)},
            spec={
                "replicas": 1,
                "selector": {"matchLabels": _labels(WEBTEST_NAME)},
                "template": {
                    "metadata": {"labels": _labels(WEBTEST_NAME)},
                    "spec": {"containers": [webtest_container()]},
                },
            },
            opts=opts(server),
        )
        self.server_service = k8s.core.v1.Service(
            f"{server.name}-{WEBTEST_NAME}-service",
            metadata={"name": WEBTEST_NAME, "namespace": namespace_of(server), "labels": _labels(WEBTEST_NAME)},
            spec={
                "type": "ClusterIP",
                "selector": _labels(WEBTEST_NAME),
                "ports": [{"name": "http", "port": WEBTEST_PORT, "targetPort": WEBTEST_PORT}],
            },
            opts=opts(server),
        )
        self.client_deployment = k8s.apps.v1.Deployment(
            f"{client.name}-{CLIENT_NAME}",
            metadata={"name": CLIENT_NAME, "namespace": namespace_of(client), "labels": _labels(CLIENT_NAME)},
            spec={
                "replicas": 1,
                "selector": {"matchLabels": _labels(CLIENT_NAME)},
                "template": {
                    "metadata": {"labels": _labels(CLIENT_NAME)},
                    "spec": {"containers": [curl_container(args.curl_image)], "terminationGracePeriodSeconds": 1},
                },
            },
            opts=opts(client),
        )
        self.curl_command = (
            f"kubectl --kubeconfig kubeconfig.yaml --context {client.name} -n {DEMO_NAMESPACE} "
            f"exec deploy/{CLIENT_NAME} -c {CLIENT_NAME} -- curl -sS {WEBTEST_URL}"
        )

        self.smoke_test = None
        if args.smoke_test:
            self.smoke_test = k8s.batch.v1.Job(
                f"{client.name}-exodemo-smoke-test",
                metadata={
                    "name": pulumi.Output.from_input(args.mesh_fingerprint).apply(
                        lambda fingerprint: f"exodemo-smoke-{fingerprint}"
                    ),
                    "namespace": namespace_of(client),
                    "labels": _labels("exodemo-smoke-test"),
                },
                spec={
                    "backoffLimit": 1,
                    "activeDeadlineSeconds": SMOKE_ATTEMPTS * (SMOKE_DELAY_SECONDS + 6) + 120,
                    "template": {
                        "metadata": {
                            "labels": _labels("exodemo-smoke-test"),
                            "annotations": {
                                # The proxy runs as a native sidecar that Kubernetes stops when
                                # the test ends, and the test starts only once the proxy is ready.
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
                opts=opts(
                    client,
                    depends_on=[*args.mesh_dependencies, self.server_deployment, self.server_service],
                ),
            )
        self.register_outputs({"curl_command": self.curl_command})
