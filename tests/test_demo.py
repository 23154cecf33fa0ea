"""The exodemo app: exo-webtest in the server cluster, the curl client in the client cluster."""

from testing.program import Recording, run_program, stack_config
from tests.harness import validate_kubernetes

WEBTEST_IMAGE = "exo.container-registry.com/exoscale-images/exo-webtest:v2"
RELEASE = "kubernetes:helm.sh/v3:Release"


def in_cluster(recording: Recording, kind: str, cluster: str) -> list:
    return [r for r in recording.k8s_objects(kind) if recording.cluster_of(r) == cluster
            and r.inputs["metadata"].get("namespace") == "exodemo"]


def test_exodemo_namespace_with_injection_exists_in_every_cluster_after_istiod(three_clusters):
    namespaces = [n for n in three_clusters.k8s_objects("Namespace") if n.inputs["metadata"]["name"] == "exodemo"]
    assert sorted(three_clusters.cluster_of(n) for n in namespaces) == ["cluster1", "cluster2", "cluster3"]
    for namespace in namespaces:
        assert namespace.inputs["metadata"]["labels"] == {"istio-injection": "enabled"}
        cluster = three_clusters.cluster_of(namespace)
        assert three_clusters.depends_on(namespace, three_clusters.named(f"{cluster}-istiod", RELEASE))


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
    (job,) = recording.k8s_objects("Job")
    assert recording.cluster_of(job) == "cluster2"


def test_demo_objects_are_valid_kubernetes_objects(dev):
    for kind in ("Namespace", "Deployment", "Service", "Job"):
        for resource in dev.k8s_objects(kind):
            validate_kubernetes(resource)


def test_demo_can_be_disabled():
    recording = run_program({**stack_config("dev"), "demoEnabled": False})
    assert recording.k8s_objects("Job") == [] and "demoCurlCommand" not in recording.outputs
