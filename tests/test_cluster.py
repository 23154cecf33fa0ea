"""The SKS layer of the dev stack: clusters, node security, nodepools, kubeconfigs, providers."""

import copy

import pytest
import yaml

from components.config import parse_config
from testing import engine
from testing.program import ROOT, Recording, run_program, stack_config

SKS = "exoscale:index/sksCluster:SksCluster"
NODEPOOL = "exoscale:index/sksNodepool:SksNodepool"
RULE = "exoscale:index/securityGroupRule:SecurityGroupRule"
KUBECONFIG = "exoscale:index/sksKubeconfig:SksKubeconfig"
PROVIDER = "pulumi:providers:kubernetes"


def rules_of(recording: Recording, cluster: str) -> set[tuple]:
    group = recording.named(f"{cluster}-nodes")
    found = set()
    for rule in recording.of_type(RULE):
        if not rule.name.startswith(f"{cluster}-"):
            continue
        assert rule.inputs["securityGroupId"] == group.id
        source = "self" if rule.inputs.get("userSecurityGroupId") == group.id else rule.inputs.get("cidr")
        found.add((rule.inputs["type"], rule.inputs["protocol"], rule.inputs.get("startPort"),
                   rule.inputs.get("endPort"), rule.inputs.get("icmpType"), source))
    return found


def test_dev_stack_has_two_sks_clusters_in_different_zones_with_ccm(dev):
    clusters = {c.name: c.inputs for c in dev.of_type(SKS)}
    assert set(clusters) == {"cluster1", "cluster2"}
    assert clusters["cluster1"]["zone"] == "de-fra-1"
    assert clusters["cluster2"]["zone"] == "at-vie-2"
    for inputs in clusters.values():
        assert inputs["exoscaleCcm"] is True
        assert inputs["cni"] == "calico"
        assert inputs["name"].startswith("sks-istio-mesh-dev-")


def test_calico_clusters_open_kubelet_vxlan_and_nodeports(dev):
    for cluster in ("cluster1", "cluster2"):
        assert rules_of(dev, cluster) == {
            ("INGRESS", "TCP", 10250, 10250, None, "self"),
            ("INGRESS", "UDP", 4789, 4789, None, "self"),
            ("INGRESS", "TCP", 30000, 32767, None, "0.0.0.0/0"),
            ("INGRESS", "UDP", 30000, 32767, None, "0.0.0.0/0"),
        }


def test_cilium_clusters_get_ciliums_overlay_health_and_icmp_rules():
    config = stack_config("dev")
    config["clusters"][0]["cni"] = "cilium"
    recording = run_program(config)
    assert rules_of(recording, "cluster1") == {
        ("INGRESS", "TCP", 10250, 10250, None, "self"),
        ("INGRESS", "UDP", 8472, 8472, None, "self"),
        ("INGRESS", "TCP", 4240, 4240, None, "self"),
        ("INGRESS", "ICMP", None, None, 8, "self"),
        ("INGRESS", "TCP", 30000, 32767, None, "0.0.0.0/0"),
        ("INGRESS", "UDP", 30000, 32767, None, "0.0.0.0/0"),
    }
    assert recording.named("cluster1", SKS).inputs["cni"] == "cilium"
    assert ("INGRESS", "UDP", 4789, 4789, None, "self") in rules_of(recording, "cluster2")


def test_nodepools_join_their_clusters_security_and_anti_affinity_groups(dev):
    settings = parse_config(stack_config("dev"))
    for cluster in settings.clusters:
        pool = dev.named(f"{cluster.name}-nodepool", NODEPOOL).inputs
        assert pool["clusterId"] == dev.named(cluster.name, SKS).id
        assert pool["zone"] == cluster.zone
        assert pool["instanceType"] == cluster.nodepool.instance_type == "standard.medium"
        assert pool["size"] == cluster.nodepool.size
        assert pool["diskSize"] == cluster.nodepool.disk_size_gib
        assert pool["securityGroupIds"] == [dev.named(f"{cluster.name}-nodes").id]
        assert pool["antiAffinityGroupIds"] == [dev.named(f"{cluster.name}-anti-affinity").id]


def test_nodes_boot_only_after_their_security_rules_exist(dev):
    for cluster in ("cluster1", "cluster2"):
        pool = dev.named(f"{cluster}-nodepool", NODEPOOL)
        rules = [r for r in dev.of_type(RULE) if r.name.startswith(f"{cluster}-")]
        assert len(rules) == 4
        for rule in rules:
            assert dev.depends_on(pool, rule), rule.name


def test_admin_kubeconfigs_have_the_configured_ttl_and_renewal_window(dev):
    settings = parse_config(stack_config("dev"))
    for cluster in ("cluster1", "cluster2"):
        kubeconfig = dev.named(f"{cluster}-admin-kubeconfig", KUBECONFIG).inputs
        assert kubeconfig["user"] == "kubernetes-admin"
        assert kubeconfig["groups"] == ["system:masters"]
        assert kubeconfig["ttlSeconds"] == settings.kubeconfig_ttl_seconds
        assert kubeconfig["earlyRenewalSeconds"] == settings.kubeconfig_early_renewal_seconds
        assert kubeconfig["clusterId"] == dev.named(cluster, SKS).id


def test_each_cluster_has_a_provider_built_from_its_own_kubeconfig_and_pinned_to_its_id(dev):
    providers = {p.name: p for p in dev.of_type(PROVIDER)}
    assert set(providers) == {"cluster1-k8s", "cluster2-k8s"}
    for cluster in ("cluster1", "cluster2"):
        inputs = providers[f"{cluster}-k8s"].inputs
        cluster_id = dev.named(cluster, SKS).id
        assert inputs["clusterIdentifier"] == cluster_id
        server = yaml.safe_load(inputs["kubeconfig"])["clusters"][0]["cluster"]["server"]
        assert server == dev.named(cluster, SKS).outputs["endpoint"]
        assert cluster_id in server


def test_every_kubernetes_resource_names_an_explicit_cluster_provider(dev, three_clusters):
    for recording in (dev, three_clusters):
        providers = {p.urn for p in recording.of_type(PROVIDER)}
        kubernetes = [r for r in recording.resources if r.type.startswith("kubernetes:")]
        assert kubernetes
        for resource in kubernetes:
            assert resource.provider_urn in providers, resource.name


def test_default_kubernetes_providers_are_disabled_for_the_project():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    disabled = project["config"]["pulumi:disable-default-providers"]["value"]
    assert "kubernetes" in disabled or "*" in disabled


def test_stack_outputs_give_each_endpoint_and_a_secret_merged_kubeconfig(dev):
    clusters = dev.outputs["clusters"].value
    for cluster in ("cluster1", "cluster2"):
        assert clusters[cluster]["endpoint"] == dev.named(cluster, SKS).outputs["endpoint"]
    kubeconfig = dev.outputs["kubeconfig"]
    assert kubeconfig.secret
    document = yaml.safe_load(kubeconfig.value)
    contexts = {c["name"]: c["context"] for c in document["contexts"]}
    assert set(contexts) == {"cluster1", "cluster2"}
    servers = {c["name"]: c["cluster"]["server"] for c in document["clusters"]}
    users = {u["name"] for u in document["users"]}
    for name, context in contexts.items():
        assert servers[context["cluster"]] == clusters[name]["endpoint"]
        assert context["user"] in users
    assert document["current-context"] == "cluster1"


def with_cluster1(**changes) -> dict:
    config = stack_config("dev")
    config["clusters"][0] = {**config["clusters"][0], **changes}
    return config


@pytest.mark.parametrize("change", [{"cni": "cilium"}, {"serviceLevel": "pro"}], ids=["cni", "serviceLevel"])
def test_a_create_only_cluster_field_change_replaces_the_cluster_visibly(dev, change):
    # terraform-provider-exoscale v0.66.0 neither replaces on nor sends cni/service_level on
    # update: without replace_on_changes the preview shows an update that changes nothing.
    changed = run_program(with_cluster1(**change), previous=dev)
    cluster = changed.named("cluster1", SKS)
    assert cluster.step == engine.REPLACE
    # Its name and east-west NLB stay, so the old cluster must be gone before the new one is made.
    assert cluster.delete_before_replace
    assert changed.named("cluster2", SKS).step == engine.SAME
    assert changed.named("cluster1-nodes").step == engine.SAME, "never replace the node security group"
    # Peers keep their remote secret for the rebuilt cluster: it is updated, not deleted first.
    assert changed.named("cluster2-istio-remote-secret-cluster1").step == engine.UPDATE


CONFIG_CHANGES = {
    "cni": with_cluster1(cni="cilium"),
    "serviceLevel": with_cluster1(serviceLevel="pro"),
    "kubernetesVersion": with_cluster1(kubernetesVersion="1.34.3"),
    "network": with_cluster1(network="network-one"),
    "nodepool": with_cluster1(nodepool={"instanceType": "standard.large", "size": 3, "diskSize": 100}),
    "meshId": {**stack_config("dev"), "meshId": "mesh2"},
    "kubeconfigTtlSeconds": {**stack_config("dev"), "kubeconfigTtlSeconds": 14 * 24 * 3600},
}


@pytest.mark.parametrize("config", CONFIG_CHANGES.values(), ids=CONFIG_CHANGES.keys())
def test_no_config_change_yields_a_diff_the_provider_ignores_or_replaces_a_security_group(dev, config):
    changed = run_program(config, previous=dev)
    assert [n for n, step in changed.steps().items() if step == engine.IGNORED_UPDATE] == []
    for group in changed.of_type("exoscale:index/securityGroup:SecurityGroup"):
        assert group.step == engine.SAME, group.name


def test_a_security_group_keeps_an_older_description_instead_of_being_replaced(dev):
    # Groups made by earlier versions of the program carry the CNI in their description.
    earlier = copy.deepcopy(dev)
    for group in earlier.of_type("exoscale:index/securityGroup:SecurityGroup"):
        group.inputs["description"] += " (calico)"
    assert run_program(stack_config("dev"), previous=earlier).named("cluster1-nodes").step == engine.SAME
