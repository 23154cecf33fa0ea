"""The whole program under mocks: failure before registration, secrets, determinism, stable
identities, and a teardown order that leaks nothing. Checks are properties of the recorded graph."""

import base64

import yaml

from testing.program import Recording, Registered, plaintext_strings, run_failing_program, run_program, stack_config

SKS = "exoscale:index/sksCluster:SksCluster"
NODEPOOL = "exoscale:index/sksNodepool:SksNodepool"
NLB = "exoscale:index/nlb:Nlb"
RELEASE = "kubernetes:helm.sh/v3:Release"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
JOB = "kubernetes:batch/v1:Job"
READER_TOKEN = "istio-reader-service-account-istio-remote-secret-token"
SMOKE_TEST = "cluster1-exodemo-smoke-test"


def inputs_by_urn(recording: Recording) -> dict[str, dict]:
    return {r.urn: r.inputs for r in recording.resources}


def graph(recording: Recording) -> dict[str, set[str]]:
    return {r.urn: r.all_dependencies for r in recording.resources}


def test_bad_config_fails_with_every_problem_and_registers_zero_resources():
    error, registered = run_failing_program({"clusters": [{"name": "Bad_Name", "zone": "mars-1"}]})
    assert registered == []
    message = str(error)
    assert "sks-istio-mesh:clusters[0].name" in message and "sks-istio-mesh:clusters[0].zone" in message
    assert "Traceback" not in message


def test_secret_material_never_appears_in_plaintext(dev):
    secrets: set[str] = set()
    for key in dev.of_type("tls:index/privateKey:PrivateKey"):
        secrets.add(key.outputs["privateKeyPem"])
    for kubeconfig in dev.of_type("exoscale:index/sksKubeconfig:SksKubeconfig"):
        secrets.add(kubeconfig.outputs["kubeconfig"])
        for user in yaml.safe_load(kubeconfig.outputs["kubeconfig"])["users"]:
            secrets.add(user["user"]["client-key-data"])
    for secret in dev.k8s_objects("Secret"):
        if secret.inputs.get("type") == "kubernetes.io/service-account-token":
            secrets.add(base64.b64decode(secret.outputs["data"]["token"]).decode())
        for value in secret.inputs.get("stringData", {}).values():
            if "PRIVATE KEY" in value or "token" in value:
                secrets.add(value)
    assert len(secrets) >= 3 + 2 * 2 + 2
    # Key lines rather than whole values, so a re-encoded or embedded copy is found too.
    needles = {line for s in secrets for line in s.splitlines() if len(line) > 40} | secrets

    leaks = []
    for resource in dev.resources:
        for text in plaintext_strings(resource.wire_inputs):
            leaks += [(resource.name, n[:30]) for n in needles if n in text]
    for name, output in dev.outputs.items():
        if not output.secret:
            text = repr(output.value)
            leaks += [(f"output {name}", n[:30]) for n in needles if n in text]
    assert leaks == []


def test_secret_walk_catches_a_leaked_key(dev):
    key = dev.of_type("tls:index/privateKey:PrivateKey")[0].outputs["privateKeyPem"]
    assert list(plaintext_strings({"a": {"b": [key]}})) == [key]
    assert list(plaintext_strings({"a": {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270",
                                         "value": key}})) == []


def test_admin_kubeconfig_reaches_only_providers_and_the_merged_output(dev):
    client_keys = {yaml.safe_load(k.outputs["kubeconfig"])["users"][0]["user"]["client-key-data"]
                   for k in dev.of_type("exoscale:index/sksKubeconfig:SksKubeconfig")}
    holders = {r.type for r in dev.resources if any(k in repr(r.inputs) for k in client_keys)}
    assert holders == {"pulumi:providers:kubernetes"}
    assert dev.outputs["kubeconfig"].secret
    assert all(k in dev.outputs["kubeconfig"].value for k in client_keys)


def test_two_evaluations_register_identical_inputs_and_graphs(dev):
    again = run_program(stack_config("dev"))
    assert inputs_by_urn(again) == inputs_by_urn(dev)
    assert graph(again) == graph(dev)


def test_reordering_clusters_changes_nothing(dev):
    config = stack_config("dev")
    config["clusters"] = list(reversed(config["clusters"]))
    reordered = run_program(config)
    assert inputs_by_urn(reordered) == inputs_by_urn(dev)
    assert graph(reordered) == graph(dev)


def test_adding_a_cluster_registers_only_new_resources(dev, three_clusters):
    before, after = inputs_by_urn(dev), inputs_by_urn(three_clusters)
    assert set(before) <= set(after)
    changed = {urn for urn, inputs in before.items() if after[urn] != inputs}
    # The smoke test is meant to run again when the mesh changes: only its name changes.
    assert changed == {dev.named(SMOKE_TEST).urn}
    new_names = {three_clusters.by_urn(urn).name for urn in set(after) - set(before)}
    assert all("cluster3" in name for name in new_names), new_names


def test_removing_a_cluster_removes_only_its_resources_and_remote_secrets(dev, three_clusters):
    removed = {three_clusters.by_urn(u).name for u in set(inputs_by_urn(three_clusters)) - set(inputs_by_urn(dev))}
    assert removed
    assert all("cluster3" in name for name in removed)
    assert {"cluster1-istio-remote-secret-cluster3", "cluster3-istio-remote-secret-cluster1", "cluster3"} <= removed


def test_teardown_removes_gateway_then_nlb_then_nodepool_then_cluster(dev):
    for cluster in ("cluster1", "cluster2"):
        gateway = dev.named(f"{cluster}-istio-eastwestgateway", RELEASE)
        nlb = dev.named(f"{cluster}-eastwest", NLB)
        nodepool = dev.named(f"{cluster}-nodepool", NODEPOOL)
        sks = dev.named(cluster, SKS)
        # Pulumi deletes a resource before anything it depends on.
        assert dev.depends_on(gateway, nlb)
        assert dev.depends_on(nlb, nodepool)
        assert dev.depends_on(nodepool, sks)
        assert not dev.depends_on(nlb, gateway)


def is_workload(resource: Registered) -> bool:
    """Starts pods, so it needs nodes: a Deployment, a Job, or a Helm release of any chart but
    Istio's base (CRDs, RBAC, a service account and webhook configurations: API objects only)."""
    if resource.type == RELEASE:
        return resource.inputs["chart"] != "base"
    return resource.type in {DEPLOYMENT, JOB}


def test_no_workload_outlives_the_nodes_it_runs_on(dev):
    workloads = [r for r in dev.resources if is_workload(r)]
    assert len(workloads) >= 2 * 2 + 2  # istiod and a gateway per cluster, the demo's pods
    for resource in workloads:
        cluster = dev.cluster_of(resource)
        assert dev.depends_on(resource, dev.named(f"{cluster}-nodepool", NODEPOOL)), resource.name


def test_every_kubernetes_object_goes_before_its_cluster(dev):
    for resource in dev.resources:
        if resource.type.startswith("kubernetes:"):
            assert dev.depends_on(resource, dev.named(dev.cluster_of(resource), SKS)), resource.name


def test_what_needs_only_the_api_server_does_not_wait_for_nodes(dev):
    # The provider, istio-system, `cacerts`, the base chart and the reader token are applied while
    # the nodes boot; waiting for the nodepool would put its minute on the deploy's critical path.
    api_only_names = {"istio-system", "cacerts", READER_TOKEN}
    for cluster in ("cluster1", "cluster2"):
        nodepool = dev.named(f"{cluster}-nodepool", NODEPOOL)
        api_only = [
            r for r in dev.resources
            if r.type.startswith("kubernetes:") and dev.cluster_of(r) == cluster and (
                r.inputs.get("metadata", {}).get("name") in api_only_names
                or (r.type == RELEASE and r.inputs["chart"] == "base"))
        ]
        assert len(api_only) == 4
        provider = dev.by_urn(api_only[0].provider_urn)
        for resource in [provider, *api_only]:
            assert not dev.depends_on(resource, nodepool), resource.name


def test_nothing_owning_a_load_balancer_is_skipped_on_delete(dev):
    assert [r.name for r in dev.resources if r.deleted_with] == []


def test_gateway_public_ips_are_exported(dev):
    clusters = dev.outputs["clusters"].value
    for cluster in ("cluster1", "cluster2"):
        assert clusters[cluster]["eastwestGatewayIp"] == dev.named(f"{cluster}-eastwest", NLB).outputs["ipAddress"]


def test_kubeconfig_renewal_touches_only_kubeconfigs_and_keeps_provider_identity(dev):
    config = stack_config("dev")
    config["kubeconfigTtlSeconds"] = 14 * 24 * 3600
    renewed = run_program(config)
    before, after = inputs_by_urn(dev), inputs_by_urn(renewed)
    changed = {u: renewed.by_urn(u).type for u in before if before[u] != after[u]}
    # A renewed kubeconfig (new client certificate) reaches the providers and nothing else.
    assert set(changed.values()) == {"exoscale:index/sksKubeconfig:SksKubeconfig", "pulumi:providers:kubernetes"}
    for urn, typ in changed.items():
        if typ == "pulumi:providers:kubernetes":
            assert {k for k in after[urn] if after[urn][k] != before[urn].get(k)} == {"kubeconfig"}
    for provider in renewed.of_type("pulumi:providers:kubernetes"):
        cluster = provider.name.removesuffix("-k8s")
        assert provider.inputs["clusterIdentifier"] == renewed.named(cluster, SKS).id


def test_protect_guards_clusters_against_accidental_deletion(dev):
    assert not any(r.protect for r in dev.resources)
    protected = run_program({**stack_config("dev"), "protect": True})
    assert {r.name for r in protected.resources if r.protect} == {
        "cluster1", "cluster2", "mesh-ca-root-key", "mesh-ca-root-cert"}


def test_release_failure_policy_rolls_back_the_control_plane_but_not_the_gateway(dev):
    for cluster in ("cluster1", "cluster2"):
        releases = {r.inputs["chart"]: r.inputs for r in dev.of_type(RELEASE) if dev.cluster_of(r) == cluster}
        assert releases["base"]["atomic"] is True and releases["istiod"]["atomic"] is True
        assert releases["gateway"]["atomic"] is False and releases["gateway"]["cleanupOnFail"] is True
        assert releases["istiod"]["timeout"] == releases["gateway"]["timeout"] == 900


def test_helm_timeout_comes_from_config():
    recording = run_program({**stack_config("dev"), "helmTimeoutSeconds": 1200})
    timeouts = {r.inputs["chart"]: r.inputs["timeout"] for r in recording.of_type(RELEASE)}
    assert timeouts["istiod"] == timeouts["gateway"] == 1200


def test_stack_files_parse_and_run(dev):
    # Pulumi.dev.yaml is what `make deploy` uses; the fixture already ran it end to end.
    assert len(dev.of_type(SKS)) == len(stack_config("dev")["clusters"])


def test_provider_outputs_that_carry_secrets_are_declared_secret(dev):
    # The engine encrypts these in state; mocks do not apply the option, so check it is asked for.
    for kubeconfig in dev.of_type("exoscale:index/sksKubeconfig:SksKubeconfig"):
        assert "kubeconfig" in kubeconfig.additional_secret_outputs
    tokens = [s for s in dev.k8s_objects("Secret") if s.inputs.get("type") == "kubernetes.io/service-account-token"]
    assert tokens and all("data" in t.additional_secret_outputs for t in tokens)


def test_prod_stack_runs_three_protected_pro_clusters_with_three_nodes():
    prod = run_program(stack_config("prod"), stack="prod")
    clusters = prod.of_type(SKS)
    assert len(clusters) == 3 and len({c.inputs["zone"] for c in clusters}) == 3
    assert {c.inputs["serviceLevel"] for c in clusters} == {"pro"}
    assert all(c.protect for c in clusters)
    assert {p.inputs["size"] for p in prod.of_type(NODEPOOL)} == {3}
    assert prod.named("mesh-ca-root-key").protect
    assert len(prod.k8s_objects("PeerAuthentication")) == 3
    assert all(c.inputs["name"].startswith("sks-istio-mesh-prod-") for c in clusters)


def test_a_misspelt_namespace_deploys_nothing_and_names_the_key():
    clusters = stack_config("dev")["clusters"]
    error, registered = run_failing_program({}, other_config={"sks-istio-msh:clusters": clusters})
    assert registered == []
    assert "sks-istio-msh:clusters: unknown namespace sks-istio-msh" in str(error)
    assert "sks-istio-mesh:clusters: missing" not in str(error)


def test_provider_and_pulumi_namespaces_are_left_to_their_owners():
    recording = run_program(stack_config("dev"), other_config={
        "exoscale:timeout": "600", "kubernetes:deleteUnreachable": "true", "tls:proxy": "{}",
        "pulumi:disable-default-providers": '["kubernetes"]'})
    assert len(recording.of_type(SKS)) == 2


def test_prod_stack_runs_no_demo_app_and_no_smoke_test():
    prod = run_program(stack_config("prod"), stack="prod")
    assert [r.name for r in prod.resources if "exodemo" in r.name or r.type.endswith(":Job")] == []
    assert "demoCurlCommand" not in prod.outputs and "demoIngressUrl" not in prod.outputs


def test_the_demo_is_opt_in_so_a_new_stack_deploys_only_the_mesh():
    config = {k: v for k, v in stack_config("dev").items() if not k.startswith("demo")}
    recording = run_program(config)
    assert recording.k8s_objects("Job") == [] and "demoCurlCommand" not in recording.outputs


def test_dev_stack_runs_the_demo_and_its_smoke_test(dev):
    assert len(dev.k8s_objects("Job")) == 1 and "demoCurlCommand" in dev.outputs
