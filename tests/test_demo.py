"""The exodemo app and the cross-cluster smoke test that gates `pulumi up`."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from components.demo import smoke_test_script
from testing.program import Recording, run_program, stack_config
from tests.harness import validate_kubernetes
from tests.istio_schemas import chart_defaults, unknown_value_keys, validate_gateway_values, validate_istio_object

WEBTEST_IMAGE = "exo.container-registry.com/exoscale-images/exo-webtest:v2"
RELEASE = "kubernetes:helm.sh/v3:Release"
VERSION = "1.30.3"


def in_cluster(recording: Recording, kind: str, cluster: str) -> list:
    return [r for r in recording.k8s_objects(kind) if recording.cluster_of(r) == cluster
            and r.inputs["metadata"].get("namespace") == "exodemo"]


def smoke_job(recording: Recording):
    (job,) = recording.k8s_objects("Job")
    return job


def test_exodemo_namespace_with_injection_exists_in_every_cluster_after_istiod(three_clusters):
    namespaces = [n for n in three_clusters.k8s_objects("Namespace") if n.inputs["metadata"]["name"] == "exodemo"]
    assert sorted(three_clusters.cluster_of(n) for n in namespaces) == ["cluster1", "cluster2", "cluster3"]
    for namespace in namespaces:
        assert namespace.inputs["metadata"]["labels"] == {"istio-injection": "enabled"}
        cluster = three_clusters.cluster_of(namespace)
        assert three_clusters.depends_on(namespace, three_clusters.named(f"{cluster}-istio-istiod", RELEASE))


def test_exo_webtest_runs_only_in_the_server_cluster_with_probes_and_resources(dev):
    (deployment,) = in_cluster(dev, "Deployment", "cluster2")
    assert in_cluster(dev, "Service", "cluster1") == []
    spec = deployment.inputs["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    assert container["image"] == WEBTEST_IMAGE
    assert container["ports"][0]["containerPort"] == 3000
    assert container["readinessProbe"]["httpGet"]["port"] == 3000
    assert container["livenessProbe"]["httpGet"]["port"] == 3000
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_exo_webtest_service_is_cluster_ip_on_3000_and_selects_the_pods(dev):
    (service,) = in_cluster(dev, "Service", "cluster2")
    (deployment,) = in_cluster(dev, "Deployment", "cluster2")
    spec = service.inputs["spec"]
    assert service.inputs["metadata"]["name"] == "exo-webtest"
    assert spec["type"] == "ClusterIP"
    assert [(p["port"], p["targetPort"]) for p in spec["ports"]] == [(3000, 3000)]
    assert spec["selector"].items() <= deployment.inputs["spec"]["template"]["metadata"]["labels"].items()


def test_curl_client_runs_in_the_client_cluster_with_a_pinned_image(dev):
    deployments = in_cluster(dev, "Deployment", "cluster1")
    (client,) = deployments
    (container,) = client.inputs["spec"]["template"]["spec"]["containers"]
    image_tag = container["image"].rsplit(":", 1)[1]
    assert image_tag not in ("", "latest")


def test_curl_command_output_runs_curl_in_the_client_cluster_against_the_short_name(dev):
    command = dev.outputs["demoCurlCommand"].value
    assert "--context cluster1" in command and "-n exodemo" in command
    assert command.endswith("curl -sS http://exo-webtest:3000/")


def test_server_and_client_clusters_come_from_config():
    recording = run_program({**stack_config("dev"), "demoServerCluster": "cluster1", "demoClientCluster": "cluster2"})
    assert len(in_cluster(recording, "Deployment", "cluster1")) == 1
    assert recording.cluster_of(smoke_job(recording)) == "cluster2"


def test_demo_objects_are_valid_kubernetes_objects(dev):
    for kind in ("Namespace", "Deployment", "Service", "Job"):
        for resource in dev.k8s_objects(kind):
            validate_kubernetes(resource)


def test_smoke_test_runs_in_the_client_cluster_and_depends_on_everything_it_proves(three_clusters):
    recording = three_clusters
    job = smoke_job(recording)
    assert recording.cluster_of(job) == "cluster1"
    proven = [r for r in recording.k8s_objects("Secret") if r.inputs["metadata"]["name"].startswith("istio-remote-")]
    proven += [r for r in recording.of_type(RELEASE) if r.inputs["chart"] == "gateway"]
    proven += recording.k8s_objects("Gateway")
    proven += [r for r in recording.k8s_objects("Deployment") + recording.k8s_objects("Service")
               if r.inputs["metadata"]["name"] == "exo-webtest"]
    assert len(proven) == 6 + 3 + 3 + 2
    for resource in proven:
        assert recording.depends_on(job, resource), resource.name


def test_a_failed_smoke_test_is_replaced_by_the_next_up_and_reports_before_pulumi_times_out(dev):
    job = smoke_job(dev)
    assert job.inputs["metadata"]["annotations"]["pulumi.com/replaceUnready"] == "true"
    assert int(job.create_timeout.removesuffix("m")) * 60 > job.inputs["spec"]["activeDeadlineSeconds"]


def test_smoke_test_survives_its_sidecar(dev):
    template = smoke_job(dev).inputs["spec"]["template"]
    assert template["metadata"]["annotations"]["sidecar.istio.io/nativeSidecar"] == "true"
    assert template["spec"]["restartPolicy"] == "Never"
    assert "quitquitquit" in template["spec"]["containers"][0]["command"][-1]


def test_smoke_test_reruns_only_when_the_mesh_changes(dev):
    name = smoke_job(dev).inputs["metadata"]["name"]
    assert smoke_job(run_program(stack_config("dev"))).inputs["metadata"]["name"] == name, "stable across runs"
    upgraded = run_program({**stack_config("dev"), "istioVersion": "1.30.4"})
    assert smoke_job(upgraded).inputs["metadata"]["name"] != name
    assert smoke_job(upgraded).urn == smoke_job(dev).urn


def test_smoke_test_reruns_when_clusters_change(dev, three_clusters):
    assert smoke_job(three_clusters).inputs["metadata"]["name"] != smoke_job(dev).inputs["metadata"]["name"]


def test_demo_can_be_disabled():
    recording = run_program({**stack_config("dev"), "demoEnabled": False})
    assert recording.k8s_objects("Job") == [] and "demoCurlCommand" not in recording.outputs


@pytest.fixture
def fake_bin(tmp_path: Path):
    """A PATH with a scripted `curl` and an instant `sleep`, to run the smoke script for real."""
    def make(answer: str, exit_code: int = 0) -> dict[str, str]:
        for name, body in (("curl", f'case "$*" in *quitquitquit*) exit 0;; esac\necho "{answer}"\nexit {exit_code}'),
                           ("sleep", "exit 0")):
            path = tmp_path / name
            path.write_text(f"#!/bin/sh\n{body}\n")
            path.chmod(path.stat().st_mode | stat.S_IEXEC)
        return {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}",
                "TERMINATION_LOG": str(tmp_path / "termination-log")}
    return make


def run_smoke_script(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", smoke_test_script()], env=env, capture_output=True, text=True,
                          timeout=30, check=False)


def test_smoke_script_passes_on_the_exo_webtest_page(fake_bin):
    result = run_smoke_script(fake_bin("<h1>Hello World from host exo-webtest-5d9c7b8f4-x2x9k</h1>"))
    assert result.returncode == 0, result.stderr


def test_smoke_script_fails_saying_what_it_called_and_what_came_back(fake_bin, tmp_path):
    result = run_smoke_script(fake_bin("no healthy upstream"))
    assert result.returncode == 1
    assert "http://exo-webtest:3000/" in result.stderr and "no healthy upstream" in result.stderr
    assert "no healthy upstream" in (tmp_path / "termination-log").read_text()


def test_smoke_script_retries_through_connection_errors(fake_bin):
    result = run_smoke_script(fake_bin("curl: (6) Could not resolve host: exo-webtest", exit_code=6))
    assert result.returncode == 1
    assert result.stderr.count("Could not resolve host") >= 30


@pytest.fixture(scope="module")
def with_ingress() -> Recording:
    config = stack_config("dev")
    config["clusters"] = [*config["clusters"], {"name": "cluster3", "zone": "ch-gva-2", "network": "network3"}]
    return run_program({**config, "demoIngressWeights": {"cluster2": 70, "cluster3": 30}})


def test_ingress_runs_exo_webtest_in_every_weighted_cluster_but_never_the_client(with_ingress):
    runs_webtest = sorted(with_ingress.cluster_of(d) for d in with_ingress.k8s_objects("Deployment")
                          if d.inputs["metadata"]["name"] == "exo-webtest")
    assert runs_webtest == ["cluster2", "cluster3"]
    services = sorted(with_ingress.cluster_of(s) for s in with_ingress.k8s_objects("Service"))
    assert services == ["cluster2", "cluster3"]


def test_ingress_gateway_sits_in_the_server_cluster_on_a_stack_owned_nlb(with_ingress):
    gateway = with_ingress.named("cluster2-istio-ingressgateway", RELEASE)
    nlb = with_ingress.named("cluster2-exodemo-ingress", "exoscale:index/nlb:Nlb")
    values = gateway.inputs["values"]
    assert gateway.inputs["chart"] == "gateway" and gateway.inputs["namespace"] == "exodemo"
    annotations = values["service"]["annotations"]
    assert annotations["service.beta.kubernetes.io/exoscale-loadbalancer-id"] == nlb.id
    assert annotations["service.beta.kubernetes.io/exoscale-loadbalancer-external"] == "true"
    assert nlb.inputs["zone"] == "at-vie-2"
    assert with_ingress.depends_on(gateway, nlb)
    assert with_ingress.depends_on(nlb, with_ingress.named("cluster2-nodepool"))
    assert with_ingress.depends_on(gateway, with_ingress.named("cluster2-istio-istiod", RELEASE))
    validate_gateway_values(VERSION, values)
    assert unknown_value_keys(values, chart_defaults(VERSION, "gateway")) == []
    assert with_ingress.outputs["demoIngressUrl"].value == f"http://{nlb.outputs['ipAddress']}/"


def test_ingress_routes_split_traffic_by_cluster_with_valid_istio_objects(with_ingress):
    objects = {r.inputs["kind"]: r for r in with_ingress.resources
               if r.type.startswith("kubernetes:networking.istio.io") and with_ingress.cluster_of(r) == "cluster2"}
    assert set(objects) == {"Gateway", "DestinationRule", "VirtualService"}
    for resource in objects.values():
        manifest = {k: resource.inputs[k] for k in ("apiVersion", "kind", "metadata", "spec")}
        assert manifest["metadata"]["namespace"] == "exodemo"
        validate_istio_object(VERSION, manifest)
    subsets = {s["name"]: s["labels"] for s in objects["DestinationRule"].inputs["spec"]["subsets"]}
    assert subsets == {c: {"topology.istio.io/cluster": c} for c in ("cluster2", "cluster3")}
    (route,) = objects["VirtualService"].inputs["spec"]["http"]
    assert {r["destination"]["subset"]: r["weight"] for r in route["route"]} == {"cluster2": 70, "cluster3": 30}
    assert objects["VirtualService"].inputs["spec"]["gateways"] == [objects["Gateway"].inputs["metadata"]["name"]]
    assert objects["Gateway"].inputs["spec"]["selector"] == {"istio": "ingressgateway"}


def test_no_ingress_by_default(dev):
    assert "demoIngressUrl" not in dev.outputs
    assert not any(r.name.endswith("exodemo-ingress") for r in dev.resources)
