"""Config parsing, without Pulumi: every bad value is named with its key and what is allowed."""

import json

import pytest
from pydantic import ValidationError

from components.config import (
    EXOSCALE_ZONES,
    ClusterSettings,
    ConfigError,
    NodepoolSettings,
    parse_config,
)
from components.config_reference import config_keys


def cluster(name: str = "cluster1", zone: str = "de-fra-1", **extra: object) -> dict:
    return {"name": name, "zone": zone, "network": f"{name}-net", **extra}


def two_clusters(**first: object) -> list[dict]:
    return [cluster("cluster1", **first), cluster("cluster2", "at-vie-2")]


def parse(raw: dict, secret_keys: frozenset[str] = frozenset(), other_keys: frozenset[str] = frozenset()):
    """parse_config with the tutorial's two clusters unless `raw` lists its own."""
    return parse_config({"clusters": two_clusters(), **raw}, secret_keys, other_keys)


def problems(raw: dict, secret_keys: frozenset[str] = frozenset(), other_keys: frozenset[str] = frozenset()):
    with pytest.raises(ConfigError) as caught:
        parse(raw, secret_keys, other_keys)
    return caught.value.problems


def only_problem(raw: dict, secret_keys: frozenset[str] = frozenset()) -> str:
    found = problems(raw, secret_keys)
    assert len(found) == 1, found
    return found[0]


def test_two_clusters_default_to_the_tutorials_mesh_and_demo_across_them():
    settings = parse({})
    assert [(c.name, c.zone, c.network) for c in settings.clusters] == [
        ("cluster1", "de-fra-1", "cluster1-net"), ("cluster2", "at-vie-2", "cluster2-net")]
    assert settings.istio_version == "1.30.3"
    assert settings.demo_server_cluster == "cluster2"
    assert settings.demo_client_cluster == "cluster1"


def test_the_cluster_list_is_required_rather_than_defaulting_to_billed_clusters():
    with pytest.raises(ConfigError) as caught:
        parse_config({"meshId": "mesh1"})
    assert caught.value.problems == [
        "sks-istio-mesh:clusters: missing; expected a non-empty list of cluster objects"]


def test_structured_config_arrives_as_json_text_like_the_cli_sends_it():
    settings = parse_config({"clusters": json.dumps(two_clusters(cni="cilium")), "mtlsStrict": "false",
                             "kubeconfigTtlSeconds": "86400", "kubeconfigEarlyRenewalSeconds": "3600"})
    assert settings.clusters[0].cni == "cilium"
    assert settings.mtls_strict is False
    assert settings.kubeconfig_ttl_seconds == 86400


def test_cluster_defaults_are_calico_pro_and_a_medium_nodepool():
    settings = parse_config({"clusters": [cluster()]})
    assert settings.clusters[0] == ClusterSettings(
        name="cluster1", zone="de-fra-1", network="cluster1-net", kubernetes_version=None,
        cni="calico", service_level="pro",
        nodepool=NodepoolSettings(instance_type="standard.medium", size=2, disk_size_gib=50))


def test_network_defaults_to_one_per_cluster():
    settings = parse_config({"clusters": [{"name": "a", "zone": "de-fra-1"}, {"name": "b", "zone": "de-fra-1"}]})
    assert [c.network for c in settings.clusters] == ["network-a", "network-b"]


def test_one_cluster_is_a_valid_mesh_and_the_demo_stays_inside_it():
    settings = parse_config({"clusters": [cluster()]})
    assert settings.demo_server_cluster == settings.demo_client_cluster == "cluster1"


def test_five_clusters_with_cilium_and_large_nodes_are_accepted():
    zones = ["de-fra-1", "at-vie-2", "ch-gva-2", "de-muc-1", "bg-sof-1"]
    settings = parse_config({"clusters": [
        cluster(f"c{i}", zone, cni="cilium", nodepool={"instanceType": "standard.large", "size": 3})
        for i, zone in enumerate(zones)]})
    assert len(settings.clusters) == 5
    assert {c.cni for c in settings.clusters} == {"cilium"}
    assert settings.clusters[4].nodepool.instance_type == "standard.large"


def test_kubernetes_version_is_optional_and_kept_when_valid():
    settings = parse_config({"clusters": [cluster(kubernetesVersion="1.34.3")]})
    assert settings.clusters[0].kubernetes_version == "1.34.3"


def test_empty_cluster_list_is_rejected():
    message = only_problem({"clusters": []})
    assert "sks-istio-mesh:clusters" in message and "non-empty list" in message


def test_duplicate_cluster_names_are_rejected_naming_both_positions():
    message = only_problem({"clusters": [cluster("a"), {"name": "a", "zone": "at-vie-2", "network": "other"}]})
    assert "clusters[1].name" in message and '"a"' in message and "clusters[0]" in message


@pytest.mark.parametrize("bad_name", ["Cluster1", "cluster_1", "-a", "a-", "", "x" * 41, 7])
def test_names_that_are_not_dns_labels_are_rejected(bad_name):
    message = problems({"clusters": [cluster(), {"name": bad_name, "zone": "de-fra-1", "network": "n2"}]})[0]
    assert "clusters[1].name" in message and json.dumps(bad_name) in message and "DNS label" in message


def test_unknown_zone_is_rejected_listing_the_zones():
    message = only_problem({"clusters": [cluster(zone="us-east-1")]})
    assert "clusters[0].zone" in message and '"us-east-1"' in message
    assert all(zone in message for zone in EXOSCALE_ZONES)


def test_two_clusters_on_one_network_are_rejected():
    message = only_problem({"clusters": [cluster("a", network="shared"), cluster("b", network="shared")]})
    assert "clusters[1].network" in message and '"shared"' in message and "own Istio network" in message


@pytest.mark.parametrize("instance_type", ["standard.small", "standard.tiny", "standard.micro"])
def test_instance_types_smaller_than_medium_are_rejected(instance_type):
    message = only_problem({"clusters": two_clusters(nodepool={"instanceType": instance_type})})
    assert "clusters[0].nodepool.instanceType" in message and instance_type in message and "medium" in message


@pytest.mark.parametrize("instance_type", ["medium", "standard-medium", "standard.gigantic", "Standard.Medium"])
def test_malformed_instance_types_are_rejected(instance_type):
    message = only_problem({"clusters": two_clusters(nodepool={"instanceType": instance_type})})
    assert "nodepool.instanceType" in message and "<family>.<size>" in message


@pytest.mark.parametrize("size", [0, -1, "two", 1.5])
def test_nodepool_size_below_one_or_not_an_integer_is_rejected(size):
    message = only_problem({"clusters": two_clusters(nodepool={"size": size})})
    assert "clusters[0].nodepool.size" in message and "integer >= 1" in message


def test_nodepool_larger_than_an_anti_affinity_group_is_rejected():
    message = only_problem({"clusters": two_clusters(nodepool={"size": 9})})
    assert "clusters[0].nodepool.size" in message and "<= 8" in message


def test_unknown_cni_is_rejected():
    message = only_problem({"clusters": two_clusters(cni="flannel")})
    assert "clusters[0].cni" in message and '"flannel"' in message and "calico, cilium" in message


@pytest.mark.parametrize("version", ["1.34", "v1.34.3", "latest", "1.34.3-rc1"])
def test_malformed_kubernetes_versions_are_rejected(version):
    message = only_problem({"clusters": two_clusters(kubernetesVersion=version)})
    assert "clusters[0].kubernetesVersion" in message and json.dumps(version) in message


@pytest.mark.parametrize("version", ["1.30", "latest", "1.24.0"])
def test_malformed_or_too_old_istio_versions_are_rejected(version):
    message = only_problem({"istioVersion": version})
    assert "sks-istio-mesh:istioVersion" in message and "1.26.0 or newer" in message


def test_unknown_service_level_is_rejected():
    assert "serviceLevel" in only_problem({"clusters": two_clusters(serviceLevel="gold")})


def test_misspelt_keys_are_reported_instead_of_silently_ignored():
    found = problems({"meshID": "x", "clusters": [cluster(nodePool={"size": 3})]})
    assert any("sks-istio-mesh:meshID: unknown key" in p for p in found)
    assert any("clusters[0].nodePool: unknown key" in p for p in found)


def test_every_problem_is_reported_at_once():
    found = problems({"clusters": [
        {"name": "A", "zone": "nowhere", "cni": "weave", "nodepool": {"size": 0}}], "istioVersion": "2"})
    assert len(found) == 5


def test_kubeconfig_renewal_window_must_be_shorter_than_its_lifetime():
    message = only_problem({"kubeconfigTtlSeconds": 7200, "kubeconfigEarlyRenewalSeconds": 7200})
    assert "kubeconfigEarlyRenewalSeconds" in message


def test_intermediate_ca_cannot_outlive_the_root():
    message = only_problem({"rootCaValidityHours": 1000, "intermediateCaValidityHours": 2000})
    assert "intermediateCaValidityHours" in message and "root" in message


def test_demo_clusters_must_exist_and_differ():
    assert "demoServerCluster" in only_problem({"demoServerCluster": "nope"})
    assert "demoClientCluster" in only_problem({"demoServerCluster": "cluster1", "demoClientCluster": "cluster1"})


ROOT_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nsupersecretkeymaterial\n-----END PRIVATE KEY-----\n"


def test_bring_your_own_root_needs_certificate_and_key_together():
    assert "both" in only_problem({"rootCaCertPem": ROOT_PEM})
    assert "both" in only_problem({"rootCaKeyPem": KEY_PEM}, frozenset({"rootCaKeyPem"}))


def test_bring_your_own_root_key_must_be_a_secret_and_is_never_echoed():
    message = only_problem({"rootCaCertPem": ROOT_PEM, "rootCaKeyPem": KEY_PEM})
    assert "--secret" in message
    assert "supersecretkeymaterial" not in message


def test_bring_your_own_root_is_accepted_with_a_secret_key():
    settings = parse({"rootCaCertPem": ROOT_PEM, "rootCaKeyPem": KEY_PEM}, frozenset({"rootCaKeyPem"}))
    assert settings.pki.bring_your_own_root and settings.pki.root_cert_pem == ROOT_PEM


def test_settings_are_frozen():
    settings = parse({})
    with pytest.raises(ValidationError, match="frozen"):
        settings.clusters[0].name = "other"  # type: ignore[misc]


BAD_VALUE = {"not": "valid"}


@pytest.mark.parametrize("key", [k for k in config_keys() if "." not in k and "[" not in k])
def test_every_documented_top_level_key_is_read_and_validated(key):
    found = problems({key: BAD_VALUE}, frozenset({key}))
    # An object-valued key reports the object's own keys (rootCaRotation.toGeneration: missing).
    assert any(p.startswith((f"sks-istio-mesh:{key}:", f"sks-istio-mesh:{key}."))
               and "unknown key" not in p for p in found), found


@pytest.mark.parametrize("key", [k.removeprefix("rootCaRotation.") for k in config_keys()
                                 if k.startswith("rootCaRotation.")])
def test_every_documented_rotation_key_is_read_and_validated(key):
    found = problems({"rootCaRotation": {"toGeneration": 2, "phase": "trust", key: BAD_VALUE}},
                     frozenset({"rootCaRotation"}))
    assert any(p.startswith(f"sks-istio-mesh:rootCaRotation.{key}:") for p in found), found


ROTATION = {"toGeneration": 2, "phase": "switch", "switchedClusters": ["cluster1"]}


@pytest.mark.parametrize(("rotation", "extra", "expected"), [
    ({"toGeneration": 3}, {}, 'sks-istio-mesh:rootCaRotation.toGeneration: 3 is not allowed; expected '
     "rootCaGeneration + 1 (2): a rotation moves from the running root to the next generation"),
    ({"toGeneration": 3}, {"rootCaGeneration": 2}, None),
    ({"phase": "cutover"}, {}, 'sks-istio-mesh:rootCaRotation.phase: "cutover" is not allowed; expected one of '
     "trust (every cluster trusts both roots), switch (switchedClusters issue from the new root), finalize "
     "(only the new root)"),
    ({"switchedClusters": ["cluster1", "cluster9"]}, {}, 'sks-istio-mesh:rootCaRotation.switchedClusters[1]: '
     '"cluster9" is not allowed; expected one of the configured clusters (cluster1, cluster2), each once'),
    ({"phase": "trust"}, {}, 'sks-istio-mesh:rootCaRotation.switchedClusters: ["cluster1"] is not allowed; '
     "expected empty in phase trust: no cluster switches before every cluster trusts the new root"),
    ({"switchedClusters": []}, {}, "sks-istio-mesh:rootCaRotation.switchedClusters: [] is not allowed; expected "
     "one or more configured clusters in phase switch"),
    ({"phase": "finalize"}, {}, 'sks-istio-mesh:rootCaRotation.switchedClusters: ["cluster1"] is not allowed; '
     "expected every configured cluster (cluster1, cluster2) or unset in phase finalize: every cluster has "
     "switched before"),
    ({}, {"multiRootTrust": False}, "sks-istio-mesh:multiRootTrust: false is not allowed; expected true while "
     "rootCaRotation is set: without ISTIO_MULTIROOT_MESH istiod ignores the second root"),
], ids=["toGeneration", "toGeneration-2-to-3", "phase", "unknown-cluster", "trust-with-switched", "switch-none",
        "finalize-partial", "flags-off"])
def test_a_rotation_block_names_each_bad_value(rotation, extra, expected):
    raw = {"rootCaRotation": {**ROTATION, **rotation}, **extra}
    if expected is None:
        assert parse(raw).root_ca_rotation.to_generation == 3
    else:
        assert problems(raw) == [expected]


def test_finalize_may_list_every_cluster_or_none():
    for switched in ([], ["cluster2", "cluster1"]):
        parse({"rootCaRotation": {"toGeneration": 2, "phase": "finalize", "switchedClusters": switched}})


def test_an_own_new_root_needs_both_pems_and_a_secret_key_that_is_never_echoed():
    own = {"toGeneration": 2, "phase": "trust", "rootCaCertPem": ROOT_PEM}
    assert "both" in only_problem({"rootCaRotation": own}).split("expected ")[1]
    message = only_problem({"rootCaRotation": {**own, "rootCaKeyPem": KEY_PEM}})
    assert message == ("sks-istio-mesh:rootCaRotation.rootCaKeyPem: (secret value) is not allowed; expected a secret: "
                       "set it with `pulumi config set --secret --path rootCaRotation.rootCaKeyPem`")
    settings = parse({"rootCaRotation": {**own, "rootCaKeyPem": KEY_PEM}}, frozenset({"rootCaRotation"}))
    assert settings.pki.new_root is not None and settings.pki.new_root.cert_pem == ROOT_PEM


def test_multi_root_trust_is_on_by_default():
    assert parse({}).multi_root_trust is True


@pytest.mark.parametrize("key", [k.removeprefix("clusters[].") for k in config_keys() if k.startswith("clusters[].")])
def test_every_documented_cluster_key_is_read_and_validated(key):
    entry = cluster()
    if key.startswith("nodepool."):
        entry["nodepool"] = {key.removeprefix("nodepool."): BAD_VALUE}
    else:
        entry[key] = BAD_VALUE
    found = problems({"clusters": [entry]})
    assert any(p.startswith(f"sks-istio-mesh:clusters[0].{key}:") and "unknown key" not in p for p in found), found


def test_ingress_weights_are_parsed_from_json():
    settings = parse_config({"clusters": [cluster("c1"), cluster("c2"), cluster("c3")],
                             "demoIngressWeights": json.dumps({"c3": 30, "c2": 70})})
    assert list(settings.demo_ingress_weights.items()) == [("c3", 30), ("c2", 70)]


@pytest.mark.parametrize("weights", [{"c1": 50, "c2": 50}, {"c2": 60}, {"nope": 100}, {"c2": True}, [100]])
def test_ingress_weights_must_sum_to_100_over_known_clusters_other_than_the_client(weights):
    message = only_problem({"clusters": [cluster("c1"), cluster("c2"), cluster("c3")], "demoIngressWeights": weights})
    assert "sks-istio-mesh:demoIngressWeights" in message and "other than the client" in message


def test_a_bad_cluster_list_is_one_problem_not_also_the_demo_keys_that_name_its_clusters():
    config = {"clusters": [cluster("cluster1"), cluster("cluster2", zone="mars-1")],
              "demoServerCluster": "cluster2", "demoClientCluster": "cluster1"}
    assert problems(config) == [
        'sks-istio-mesh:clusters[1].zone: "mars-1" is not allowed; expected one of ' + ", ".join(EXOSCALE_ZONES)]


def test_a_duplicate_name_is_blamed_on_the_repeating_entry_even_after_an_invalid_one():
    entries = [cluster("Bad_Name", network="n1"), cluster("c2", network="n2"), cluster("c2", network="n3")]
    found = problems({"clusters": entries})
    assert len(found) == 2
    assert any(p.startswith('sks-istio-mesh:clusters[0].name: "Bad_Name" is not allowed') for p in found)
    assert any(p.startswith('sks-istio-mesh:clusters[2].name: "c2" is already used by clusters[1]') for p in found)


@pytest.mark.parametrize("weights", [{}, "{}"])
def test_the_documented_default_of_no_ingress_weights_is_accepted(weights):
    assert parse({"demoIngressWeights": weights}).demo_ingress_weights == {}


def test_a_key_in_a_misspelt_namespace_is_one_line_naming_the_allowed_namespaces():
    found = problems({}, other_keys=frozenset({"sks-istio-msh:meshId", "exoscale:key", "pulumi:tags"}))
    assert found == ["sks-istio-msh:meshId: unknown namespace sks-istio-msh; stack config keys belong to "
                     "sks-istio-mesh, exoscale, kubernetes, tls or pulumi (did you mean sks-istio-mesh:meshId?)"]


def test_a_misspelt_cluster_list_is_not_also_reported_missing():
    with pytest.raises(ConfigError) as caught:
        parse_config({}, other_keys=frozenset({"sks-istio-msh:clusters"}))
    [problem] = caught.value.problems
    assert problem.startswith("sks-istio-msh:clusters: unknown namespace sks-istio-msh")


def test_a_duplicate_is_blamed_on_its_own_position_even_after_an_entry_that_is_not_an_object():
    found = problems({"clusters": ["cluster0", cluster("c1"), cluster("c1", network="n2")]})
    expected = 'sks-istio-mesh:clusters[2].name: "c1" is already used by clusters[1]'
    assert any(p.startswith(expected) for p in found), found
