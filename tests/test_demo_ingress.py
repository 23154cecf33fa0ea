"""The demo's optional public ingress: weighted routing across clusters on a stack-owned NLB."""

import pytest

from testing.program import Recording, run_program, stack_config
from tests.istio_schemas import chart_defaults, unknown_value_keys, validate_gateway_values, validate_istio_object

RELEASE = "kubernetes:helm.sh/v3:Release"
VERSION = "1.30.3"


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
    assert with_ingress.depends_on(gateway, with_ingress.named("cluster2-istiod", RELEASE))
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
