"""Istio control planes: Helm values, ordering, and Istio objects checked against Istio's own
chart values and CRD schemas of the pinned version."""

import jsonschema
import kubernetes_validate
import pytest

from components.config import parse_config
from testing import engine
from testing.program import Recording, run_program, stack_config
from tests.harness import KUBERNETES_VERSION
from tests.istio_schemas import (
    chart_defaults,
    chart_template,
    unknown_value_keys,
    validate_gateway_values,
    validate_istio_object,
    with_chart_defaults,
)

RELEASE = "kubernetes:helm.sh/v3:Release"
SETTINGS = parse_config(stack_config("dev"))
VERSION = SETTINGS.istio_version
CLUSTERS = [c.name for c in SETTINGS.clusters]
CHART_REPO = "https://istio-release.storage.googleapis.com/charts"


def release(recording: Recording, cluster: str, name: str):
    return recording.named(f"{cluster}-{name}", RELEASE)


def all_releases(recording: Recording):
    return recording.of_type(RELEASE)


def test_istio_system_is_created_with_the_clusters_network_label(dev):
    for cluster in SETTINGS.clusters:
        namespace = dev.named(f"{cluster.name}-istio-system").inputs["metadata"]
        assert namespace["name"] == "istio-system"
        assert namespace["labels"] == {"topology.istio.io/network": cluster.network}


def test_every_cluster_installs_base_istiod_and_the_eastwest_gateway_from_the_istio_repo(dev):
    for cluster in CLUSTERS:
        charts = {release(dev, cluster, n).inputs["chart"]: release(dev, cluster, n).inputs
                  for n in ("istio-base", "istiod", "istio-eastwestgateway")}
        assert set(charts) == {"base", "istiod", "gateway"}
        for inputs in charts.values():
            assert inputs["repositoryOpts"]["repo"] == CHART_REPO
            assert inputs["namespace"] == "istio-system"
            assert inputs["version"] == VERSION
            assert inputs["timeout"] > 0
            assert not inputs.get("skipAwait"), "releases must wait for readiness"
        assert charts["gateway"]["name"] == "istio-eastwestgateway"


def test_a_chart_mirror_replaces_the_istio_repository_for_every_release():
    mirror = "http://charts.mirror.example:8080/istio"
    recording = run_program(
        {**stack_config("dev"), "istioChartRepository": mirror, "demoIngressWeights": {"cluster2": 100}}
    )
    releases = all_releases(recording)
    assert len(releases) == 3 * len(CLUSTERS) + 1  # base, istiod, gateway per cluster, plus the ingress gateway
    assert {r.inputs["repositoryOpts"]["repo"] for r in releases} == {mirror}


def test_a_chart_repository_that_is_not_a_url_is_rejected():
    with pytest.raises(ValueError, match=r"istioChartRepository: \"charts/istio\" is not allowed; expected an http"):
        parse_config({**stack_config("dev"), "istioChartRepository": "charts/istio"})


def test_one_pinned_istio_version_across_the_mesh(three_clusters):
    assert {r.inputs["version"] for r in all_releases(three_clusters)} == {VERSION}


def test_istiod_values_name_the_mesh_cluster_and_network_and_turn_on_dns_proxying(dev):
    for cluster in SETTINGS.clusters:
        values = release(dev, cluster.name, "istiod").inputs["values"]
        assert values["global"]["meshID"] == SETTINGS.mesh_id
        assert values["global"]["multiCluster"]["clusterName"] == cluster.name
        assert values["global"]["network"] == cluster.network
        assert values["meshConfig"]["defaultConfig"]["proxyMetadata"]["ISTIO_META_DNS_CAPTURE"] == "true"


# Istio's names (pilot/pkg/features: ISTIO_MULTIROOT_MESH, istiod's environment; pilot/cmd/pilot-agent
# options: PROXY_CONFIG_XDS_AGENT, the agent's environment from proxyMetadata). Strings: Helm writes env
# values quoted and the agent parses them as booleans.
MULTIROOT_ENV = {"ISTIO_MULTIROOT_MESH": "true"}
MULTIROOT_METADATA = {"PROXY_CONFIG_XDS_AGENT": "true"}


def test_multi_root_trust_is_on_by_default_in_istiod_and_every_proxy(dev):
    for cluster in SETTINGS.clusters:
        values = release(dev, cluster.name, "istiod").inputs["values"]
        assert values["env"] == MULTIROOT_ENV
        assert values["meshConfig"]["defaultConfig"]["proxyMetadata"] == {
            "ISTIO_META_DNS_CAPTURE": "true", **MULTIROOT_METADATA}


def test_multi_root_trust_can_be_turned_off():
    recording = run_program({**stack_config("dev"), "multiRootTrust": False})
    for cluster in SETTINGS.clusters:
        values = release(recording, cluster.name, "istiod").inputs["values"]
        assert "env" not in values
        assert values["meshConfig"]["defaultConfig"]["proxyMetadata"] == {"ISTIO_META_DNS_CAPTURE": "true"}


def test_deprecated_dns_auto_allocation_is_not_set_anywhere(dev):
    assert "ISTIO_META_DNS_AUTO_ALLOCATE" not in repr([r.inputs for r in dev.resources])


def test_istiod_requests_fit_a_standard_medium_node(dev):
    requests = release(dev, "cluster1", "istiod").inputs["values"]["resources"]["requests"]
    assert requests["memory"].endswith("Mi") and int(requests["memory"][:-2]) <= 1024
    assert requests["cpu"].endswith("m") and int(requests["cpu"][:-1]) <= 500


def test_eastwest_gateway_serves_its_network_on_the_stacks_own_nlb(dev):
    for cluster in SETTINGS.clusters:
        values = release(dev, cluster.name, "istio-eastwestgateway").inputs["values"]
        assert values["networkGateway"] == cluster.network
        assert values["service"]["type"] == "LoadBalancer"
        annotations = values["service"]["annotations"]
        prefix = "service.beta.kubernetes.io/exoscale-loadbalancer-"
        assert annotations[f"{prefix}id"] == dev.named(f"{cluster.name}-eastwest").id
        assert annotations[f"{prefix}external"] == "true"
        pool = dev.named(f"{cluster.name}-nodepool").outputs["instancePoolId"]
        assert annotations[f"{prefix}service-instancepool-id"] == pool


def test_every_helm_value_key_exists_in_the_charts_values_yaml(dev):
    for resource in all_releases(dev):
        chart = resource.inputs["chart"]
        unknown = unknown_value_keys(resource.inputs["values"], chart_defaults(VERSION, chart))
        assert unknown == [], f"{resource.name}: {chart} chart {VERSION} has no values {unknown}"


def test_unknown_value_check_catches_a_typo():
    assert unknown_value_keys({"global": {"meshId": "x"}}, chart_defaults(VERSION, "istiod")) == ["global.meshId"]


def test_gateway_values_validate_against_the_charts_schema(dev):
    for cluster in CLUSTERS:
        validate_gateway_values(VERSION, release(dev, cluster, "istio-eastwestgateway").inputs["values"])


def test_gateway_schema_rejects_unknown_keys():
    with pytest.raises(jsonschema.ValidationError):
        validate_gateway_values(VERSION, {"networkGatewy": "network1"})


def custom_object(resource) -> dict:
    return {"apiVersion": resource.inputs["apiVersion"], "kind": resource.inputs["kind"],
            "metadata": resource.inputs["metadata"], "spec": resource.inputs["spec"]}


def test_cross_network_gateway_exposes_15443_auto_passthrough_on_the_eastwest_gateway(dev):
    for cluster in CLUSTERS:
        gateway = custom_object(dev.named(f"{cluster}-cross-network-gateway"))
        assert gateway["apiVersion"] == "networking.istio.io/v1" and gateway["kind"] == "Gateway"
        assert gateway["metadata"]["namespace"] == "istio-system"
        assert gateway["spec"]["selector"] == {"istio": "eastwestgateway"}
        (server,) = gateway["spec"]["servers"]
        assert server["port"]["number"] == 15443 and server["port"]["protocol"] == "TLS"
        assert server["tls"] == {"mode": "AUTO_PASSTHROUGH"}
        assert server["hosts"] == ["*.local"]
        validate_istio_object(VERSION, gateway)


def test_istio_object_validation_rejects_a_bad_tls_mode():
    bad = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {},
           "spec": {"selector": {}, "servers": [{"port": {"number": 15443, "name": "tls", "protocol": "TLS"},
                                                 "tls": {"mode": "PASSTHROUGH_AUTO"}, "hosts": ["*"]}]}}
    with pytest.raises(jsonschema.ValidationError):
        validate_istio_object(VERSION, bad)


def test_mesh_wide_strict_mtls_is_on_by_default_and_valid(dev):
    for cluster in CLUSTERS:
        policy = custom_object(dev.named(f"{cluster}-strict-mtls"))
        assert policy["kind"] == "PeerAuthentication"
        assert policy["metadata"] == {"name": "default", "namespace": "istio-system"}
        assert policy["spec"] == {"mtls": {"mode": "STRICT"}}
        validate_istio_object(VERSION, policy)


def test_strict_mtls_can_be_switched_off():
    recording = run_program({**stack_config("dev"), "mtlsStrict": False})
    assert recording.k8s_objects("PeerAuthentication") == []


def test_install_order_namespace_and_cacerts_then_base_then_istiod_then_gateway(dev):
    for cluster in CLUSTERS:
        namespace = dev.named(f"{cluster}-istio-system")
        cacerts = dev.named(f"{cluster}-cacerts")
        base = release(dev, cluster, "istio-base")
        istiod = release(dev, cluster, "istiod")
        gateway = release(dev, cluster, "istio-eastwestgateway")
        assert dev.depends_on(cacerts, namespace)
        assert dev.depends_on(base, namespace)
        assert dev.depends_on(istiod, cacerts) and dev.depends_on(istiod, base)
        assert dev.depends_on(gateway, istiod)
        for istio_object in ("cross-network-gateway", "strict-mtls"):
            assert dev.depends_on(dev.named(f"{cluster}-{istio_object}"), base)


def test_injected_workloads_wait_for_istiod(dev):
    for resource in dev.k8s_objects("Namespace") + dev.k8s_objects("Deployment") + dev.k8s_objects("Job"):
        if resource.inputs["metadata"]["name"] == "istio-system":
            continue
        cluster = dev.cluster_of(resource)
        assert dev.depends_on(resource, release(dev, cluster, "istiod")), resource.name


def test_changing_the_istio_version_upgrades_the_same_releases_in_place(dev):
    upgraded = run_program({**stack_config("dev"), "istioVersion": "1.30.4"})
    before = {r.urn: r.inputs for r in all_releases(dev)}
    after = {r.urn: r.inputs for r in all_releases(upgraded)}
    assert set(before) == set(after), "same releases (URNs), so Helm upgrades rather than reinstalls"
    for urn, inputs in after.items():
        assert inputs["version"] == "1.30.4"
        assert {k: v for k, v in inputs.items() if k != "version"} == \
            {k: v for k, v in before[urn].items() if k != "version"}


# Availability (issue 13 item 5): istiod's injector webhook fails closed, so while no istiod runs no
# injected pod can start; a node drain must leave one istiod and one east-west gateway running.
HOSTNAME = "kubernetes.io/hostname"


@pytest.fixture(scope="module")
def prod() -> Recording:
    # ECDSA only to keep the mocks fast; the Helm values do not depend on the key algorithm.
    return run_program({**stack_config("prod"), "caKeyAlgorithm": "ECDSA"})


def effective_istiod_values(recording: Recording, cluster: str) -> dict:
    values = release(recording, cluster, "istiod").inputs["values"]
    return with_chart_defaults(values, chart_defaults(VERSION, "istiod"))


def effective_gateway_values(recording: Recording, cluster: str) -> dict:
    values = release(recording, cluster, "istio-eastwestgateway").inputs["values"]
    return with_chart_defaults(values, chart_defaults(VERSION, "gateway"))


def istiod_minimum_replicas(values: dict) -> int:
    # deployment.yaml sets `replicas` only without the autoscaler; the HPA's floor is autoscaleMin.
    return values["autoscaleMin"] if values["autoscaleEnabled"] else values["replicaCount"]


def gateway_minimum_replicas(values: dict) -> int:
    autoscaling = values["autoscaling"]
    return autoscaling["minReplicas"] if autoscaling["enabled"] else (values["replicaCount"] or 1)


def istiod_disruptions_allowed(values: dict) -> int:
    """Pods a drain may evict at once at the minimum scale, per istiod's poddisruptionbudget.yaml:
    no PDB below two replicas (then nothing stops the eviction: all of them); minAvailable unless
    maxUnavailable is set."""
    replicas = istiod_minimum_replicas(values)
    if not (values["global"]["defaultPodDisruptionBudget"]["enabled"] and replicas > 1):
        return replicas
    pdb = values["pdb"]
    if pdb.get("minAvailable") and "maxUnavailable" not in pdb:
        return replicas - pdb["minAvailable"]
    return pdb["maxUnavailable"]


def gateway_disruptions_allowed(values: dict) -> int:
    """As the gateway chart's poddisruptionbudget.yaml renders it: only with podDisruptionBudget
    set and two or more replicas, with the given minAvailable or maxUnavailable."""
    replicas = gateway_minimum_replicas(values)
    budget = values["podDisruptionBudget"]
    if not (budget and replicas > 1):
        return replicas
    if "maxUnavailable" in budget:
        return budget["maxUnavailable"]
    return replicas - budget["minAvailable"]


def test_the_pdb_rules_restated_here_are_the_charts():
    istiod = chart_template(VERSION, "istiod", "poddisruptionbudget.yaml")
    assert ("(and .Values.autoscaleEnabled  (gt (int .Values.autoscaleMin) 1)) "
            "(and (not .Values.autoscaleEnabled) (gt (int .Values.replicaCount) 1))") in istiod
    assert 'if and .Values.pdb.minAvailable (not (hasKey .Values.pdb "maxUnavailable"))' in istiod
    assert "app: istiod" in istiod  # the PDB's selector, which the spread below also uses
    gateway = chart_template(VERSION, "gateway", "poddisruptionbudget.yaml")
    assert "(and .Values.autoscaling.enabled  (gt (int .Values.autoscaling.minReplicas) 1))" in gateway
    assert "{{- with .Values.podDisruptionBudget }}" in gateway
    helpers = chart_template(VERSION, "gateway", "_helpers.tpl")
    assert 'istio: {{ (.Values.labels.istio | quote) | default (include "gateway.name" . | trimPrefix "istio-") }}' \
        in helpers


def test_replicas_default_to_one_per_cluster(dev):
    settings = parse_config(stack_config("dev"))
    assert (settings.istiod_replicas, settings.eastwest_gateway_replicas) == (1, 1)
    for cluster in CLUSTERS:
        assert istiod_minimum_replicas(effective_istiod_values(dev, cluster)) == 1
        assert gateway_minimum_replicas(effective_gateway_values(dev, cluster)) == 1


@pytest.mark.parametrize("key", ["istiodReplicas", "eastwestGatewayReplicas"])
@pytest.mark.parametrize("value", [0, -1, "two", 1.5])
def test_replica_counts_below_one_or_not_integers_are_rejected(key, value):
    with pytest.raises(ValueError, match=rf"{key}: .* is not allowed; expected an integer >= 1"):
        parse_config({**stack_config("dev"), key: value})


def test_prod_runs_two_or_more_istiods_and_eastwest_gateways_per_cluster(prod):
    settings = parse_config(stack_config("prod"))
    assert settings.istiod_replicas >= 2 and settings.eastwest_gateway_replicas >= 2
    for cluster in (c.name for c in settings.clusters):
        istiod, gateway = effective_istiod_values(prod, cluster), effective_gateway_values(prod, cluster)
        assert istiod_minimum_replicas(istiod) == settings.istiod_replicas
        assert gateway_minimum_replicas(gateway) == settings.eastwest_gateway_replicas
        # The autoscalers may grow the deployments, never below the floor.
        assert istiod["autoscaleMax"] >= istiod["autoscaleMin"]
        assert gateway["autoscaling"]["maxReplicas"] >= gateway["autoscaling"]["minReplicas"]


@pytest.mark.parametrize("replicas", [2, 3])
def test_with_two_or_more_replicas_a_drain_evicts_one_istiod_and_one_gateway_at_a_time(replicas):
    recording = run_program({**stack_config("dev"), "caKeyAlgorithm": "ECDSA",
                             "istiodReplicas": replicas, "eastwestGatewayReplicas": replicas})
    for cluster in CLUSTERS:
        assert istiod_disruptions_allowed(effective_istiod_values(recording, cluster)) == 1
        assert gateway_disruptions_allowed(effective_gateway_values(recording, cluster)) == 1


def test_with_one_replica_nothing_holds_a_drain_back(dev):
    # One replica with a PDB would block every drain (kubernetes/kubernetes#93476): no budget then.
    for cluster in CLUSTERS:
        assert istiod_disruptions_allowed(effective_istiod_values(dev, cluster)) == 1
        assert gateway_disruptions_allowed(effective_gateway_values(dev, cluster)) == 1
        assert not effective_gateway_values(dev, cluster)["podDisruptionBudget"]


def spread_pod(constraints: list[dict]) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "spread"},
            "spec": {"containers": [{"name": "c", "image": "i"}], "topologySpreadConstraints": constraints}}


def spreads_across_nodes(constraints: list[dict], pod_labels: dict[str, str]) -> bool:
    kubernetes_validate.validate(spread_pod(constraints), KUBERNETES_VERSION, strict=True)
    return any(
        c["topologyKey"] == HOSTNAME and c["whenUnsatisfiable"] == "DoNotSchedule" and c["maxSkew"] == 1
        and c["labelSelector"]["matchLabels"].items() <= pod_labels.items()
        for c in constraints
    )


def test_prod_spreads_istiod_and_the_gateway_across_nodes(prod):
    gateway_labels = {"app": "istio-eastwestgateway", "istio": "eastwestgateway"}  # _helpers.tpl, checked above
    for cluster in (c.name for c in parse_config(stack_config("prod")).clusters):
        istiod, gateway = effective_istiod_values(prod, cluster), effective_gateway_values(prod, cluster)
        assert spreads_across_nodes(istiod["topologySpreadConstraints"], {"app": "istiod", "istio": "pilot"})
        assert spreads_across_nodes(gateway["topologySpreadConstraints"], gateway_labels)


def test_prod_values_are_chart_values_and_the_gateway_schema_accepts_them(prod):
    for resource in all_releases(prod):
        chart = resource.inputs["chart"]
        assert unknown_value_keys(resource.inputs["values"], chart_defaults(VERSION, chart)) == [], resource.name
        if chart == "gateway":
            validate_gateway_values(VERSION, resource.inputs["values"])


def test_reissued_intermediates_update_cacerts_in_place_so_istiod_reloads_them(dev):
    # A new validity re-issues every intermediate, as early renewal does. istiod watches the
    # mounted `cacerts` files: the Secret must be updated, not deleted and re-created under its
    # fixed name (pulumi-kubernetes replaces Secrets on a data change unless mutable).
    reissued = run_program({**stack_config("dev"), "intermediateCaValidityHours": 8760}, previous=dev)
    steps = reissued.steps()
    for cluster in CLUSTERS:
        assert steps[f"mesh-ca-{cluster}-intermediate-cert"] == engine.REPLACE
        assert steps[f"{cluster}-cacerts"] == engine.UPDATE
        new_intermediate = reissued.named(f"mesh-ca-{cluster}-intermediate-cert").outputs["certPem"]
        assert reissued.named(f"{cluster}-cacerts").inputs["stringData"]["ca-cert.pem"] == new_intermediate
        assert new_intermediate != dev.named(f"mesh-ca-{cluster}-intermediate-cert").outputs["certPem"]
