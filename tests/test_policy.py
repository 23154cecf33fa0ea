"""The policy pack (policy/): each policy rejects what it must, and the program's real resources,
as the engine would hand them to the pack, pass every policy.

Arguments are built with pulumi-policy's own classes and props wrapped in its unknown-checking
proxy, as `pulumi preview --policy-pack policy` does; unknown values use its preview sentinels.
"""

from __future__ import annotations

import base64
import runpy
import sys
from pathlib import Path
from typing import Any

import pulumi_policy
import pytest
import yaml
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
)
from pulumi_policy.proxy import (
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_STRING_VALUE,
    unknown_checking_proxy,
)

from policy import mesh_policies as mp
from testing.program import Recording, Registered, run_program, stack_config

ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = ROOT / "policy"
PROJECT = "sks-istio-mesh"
ISTIO_VERSION = "1.30.3"
CA_USES = ["cert_signing", "crl_signing", "digital_signature", "content_commitment", "key_encipherment"]


# Engine-shaped arguments -----------------------------------------------------------------------


def urn_of(typ: str, name: str, stack: str = "dev") -> str:
    return f"urn:pulumi:{stack}::{PROJECT}::{typ}::{name}"


def options() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def provider(name: str, package: str = "kubernetes") -> PolicyProviderResource:
    typ = f"pulumi:providers:{package}"
    return PolicyProviderResource(typ, unknown_checking_proxy({}), urn_of(typ, name), name)


def resource_args(
    typ: str, name: str, props: dict[str, Any], *, stack: str = "dev",
    provider_name: str | None = "cluster1-k8s", config: dict[str, Any] | None = None,
) -> ResourceValidationArgs:
    return ResourceValidationArgs(
        typ, unknown_checking_proxy(props), urn_of(typ, name, stack), name, options(),
        provider(provider_name) if provider_name else None, config,
    )


def stack_resource(typ: str, name: str, props: dict[str, Any], stack: str = "dev") -> PolicyResource:
    return PolicyResource(typ, unknown_checking_proxy(props), urn_of(typ, name, stack), name, options(),
                          None, None, [], {})


def check(policy: Policy, args: ResourceValidationArgs | StackValidationArgs) -> list[str]:
    messages: list[str] = []
    policy.validate(args, lambda message, urn=None: messages.append(message))
    return messages


def check_stack(policy: Policy, resources: list[PolicyResource]) -> list[str]:
    return check(policy, StackValidationArgs(resources, None))


def release(name: str, chart: str, values: dict[str, Any], version: Any = ISTIO_VERSION) -> dict[str, Any]:
    return {"name": name, "chart": chart, "version": version, "namespace": "istio-system", "values": values}


def istiod(cluster: str, mesh_id: Any = "mesh1", version: Any = ISTIO_VERSION) -> PolicyResource:
    values = {"global": {"meshID": mesh_id, "multiCluster": {"clusterName": cluster}, "network": f"{cluster}-net"}}
    return stack_resource(mp.HELM_RELEASE, f"{cluster}-istiod", release("istiod", "istiod", values, version))


def intermediate(cluster: str, ca_cert_pem: Any, **overrides: Any) -> PolicyResource:
    props = {"isCaCertificate": True, "allowedUses": CA_USES, "caCertPem": ca_cert_pem,
             "certRequestPem": "-----BEGIN CERTIFICATE REQUEST-----", **overrides}
    return stack_resource(mp.LOCALLY_SIGNED_CERT, f"mesh-ca-{cluster}-intermediate-cert", props)


# The program under mocks, as the engine would present it to the pack ----------------------------


def _provider_of(resource: Registered) -> PolicyProviderResource | None:
    if resource.provider_urn:
        name = resource.provider_urn.rsplit("::", 1)[-1]
        return PolicyProviderResource("pulumi:providers:kubernetes", unknown_checking_proxy({}),
                                      resource.provider_urn, name)
    if resource.custom and not resource.type.startswith("pulumi:providers:"):
        # The mocks register no default providers; the engine would use e.g. exoscale's default one.
        return provider("default_1_0_0", resource.type.split(":", 1)[0])
    return None


def pack_violations(recording: Recording, config: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Run every policy the way the engine does: resource policies on each resource's inputs,
    stack policies once on every resource's outputs."""
    config = config or {}
    found: list[str] = []

    def report(message: str, urn: str | None = None) -> None:
        found.append(message)

    for policy in mp.POLICIES:
        if isinstance(policy, ResourceValidationPolicy):
            for r in recording.resources:
                args = ResourceValidationArgs(r.type, unknown_checking_proxy(r.inputs), r.urn, r.name, options(),
                                              _provider_of(r), config.get(policy.name))
                policy.validate(args, report)
        else:
            resources = [
                PolicyResource(r.type, unknown_checking_proxy(r.outputs or r.inputs), r.urn, r.name, options(),
                               _provider_of(r), None, [], {})
                for r in recording.resources
            ]
            policy.validate(StackValidationArgs(resources, config.get(policy.name)), report)
    return found


@pytest.fixture(scope="module")
def prod() -> Recording:
    """The prod stack file, as stack `prod`."""
    return run_program(stack_config("prod"), stack="prod")


# 1. Explicit Kubernetes providers ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "default_4_34_2"])
def test_kubernetes_resource_on_a_default_provider_is_rejected(name):
    args = resource_args("kubernetes:core/v1:Namespace", "cluster1-istio-system",
                         {"metadata": {"name": "istio-system"}}, provider_name=name)
    [message] = check(mp.EXPLICIT_PROVIDER, args)
    assert '"cluster1-istio-system"' in message
    assert f'default Kubernetes provider "{name}"' in message
    assert "expected an explicit provider" in message


def test_kubernetes_resource_on_its_clusters_provider_passes():
    args = resource_args(mp.HELM_RELEASE, "cluster1-istiod", release("istiod", "istiod", {}),
                         provider_name="cluster1-k8s")
    assert check(mp.EXPLICIT_PROVIDER, args) == []


def test_other_packages_may_use_their_default_providers():
    args = resource_args(mp.SKS_CLUSTER, "cluster1", {"zone": "de-fra-1"}, provider_name="default_0_66_1")
    assert check(mp.EXPLICIT_PROVIDER, args) == []


# 2. One meshID, one Istio version ---------------------------------------------------------------


def test_istiod_releases_with_different_mesh_ids_are_rejected():
    messages = check_stack(mp.ISTIO_RELEASES, [istiod("cluster1"), istiod("cluster2", mesh_id="mesh2")])
    assert messages == [
        f'{mp.HELM_RELEASE} "cluster2-istiod" sets values.global.meshID "mesh2"; expected "mesh1", the '
        'meshID of "cluster1-istiod": every istiod of the mesh must share one meshID'
    ]


def test_istiod_release_without_a_mesh_id_is_rejected():
    without = stack_resource(mp.HELM_RELEASE, "cluster2-istiod", release("istiod", "istiod", {}))
    [message] = check_stack(mp.ISTIO_RELEASES, [istiod("cluster1"), without])
    assert '"cluster2-istiod" sets no values.global.meshID; expected "mesh1"' in message


def test_istiod_releases_agreeing_on_no_mesh_id_and_no_version_are_rejected():
    messages = check_stack(mp.ISTIO_RELEASES, [istiod("cluster1", mesh_id=None, version=None),
                                                istiod("cluster2", mesh_id=None, version=None)])
    assert messages == [
        *(f'{mp.HELM_RELEASE} "{c}-istiod" sets no values.global.meshID; expected the one meshID every '
          "istiod release shares" for c in ("cluster1", "cluster2")),
        *(f'{mp.HELM_RELEASE} "{c}-istiod" (chart istiod) pins no chart version; expected one pinned '
          "Istio version for every base, istiod and gateway release" for c in ("cluster1", "cluster2")),
    ]


def test_istio_release_on_another_chart_version_is_rejected():
    gateway = stack_resource(mp.HELM_RELEASE, "cluster2-istio-eastwestgateway",
                             release(mp.EASTWEST_GATEWAY, "gateway", {}, version="1.29.0"))
    base = stack_resource(mp.HELM_RELEASE, "cluster2-istio-base", release("istio-base", "base", {}, version=None))
    messages = check_stack(mp.ISTIO_RELEASES, [istiod("cluster1"), istiod("cluster2"), gateway, base])
    assert len(messages) == 2
    assert messages[0].startswith(
        f'{mp.HELM_RELEASE} "cluster2-istio-eastwestgateway" (chart gateway) uses chart version "1.29.0"; '
        f'expected "{ISTIO_VERSION}"'
    )
    assert '"cluster2-istio-base" (chart base) pins no chart version' in messages[1]


def test_istiod_releases_on_different_versions_are_rejected():
    [message] = check_stack(mp.ISTIO_RELEASES, [istiod("cluster1"), istiod("cluster2"),
                                                istiod("cluster3", version="1.29.0")])
    assert '"cluster3-istiod" (chart istiod) uses chart version "1.29.0"' in message
    assert '"cluster1-istiod", "cluster2-istiod"' in message


def test_unknown_mesh_id_and_version_in_preview_are_skipped():
    unknown = istiod("cluster2", mesh_id=UNKNOWN_STRING_VALUE, version=UNKNOWN_STRING_VALUE)
    assert check_stack(mp.ISTIO_RELEASES, [istiod("cluster1"), unknown]) == []


# 3. Intermediate CAs under one root -------------------------------------------------------------


def test_intermediate_that_is_not_a_ca_is_rejected():
    [message] = check_stack(mp.INTERMEDIATE_CAS, [intermediate("cluster1", "ROOT", isCaCertificate=False)])
    assert message.startswith(
        f'{mp.LOCALLY_SIGNED_CERT} "mesh-ca-cluster1-intermediate-cert" has isCaCertificate false; expected true'
    )


def test_intermediate_without_cert_signing_is_rejected():
    uses = ["digital_signature", "key_encipherment"]
    [message] = check_stack(mp.INTERMEDIATE_CAS, [intermediate("cluster1", "ROOT", allowedUses=uses)])
    assert '"mesh-ca-cluster1-intermediate-cert" has allowedUses ["digital_signature", "key_encipherment"]' in message
    assert 'expected "cert_signing" among them' in message


def pems(recording: Recording) -> tuple[str, str]:
    """The dev stack's root certificate, and another real CA certificate (an intermediate)."""
    root = recording.of_type(mp.SELF_SIGNED_CERT)[0].outputs["certPem"]
    other = recording.named("mesh-ca-cluster1-intermediate-cert").outputs["certPem"]
    return root, other


def test_intermediates_signed_by_different_roots_are_rejected(dev):
    root, other = pems(dev)
    messages = check_stack(mp.INTERMEDIATE_CAS, [
        intermediate("cluster1", root), intermediate("cluster2", root), intermediate("cluster3", other),
    ])
    [message] = messages
    assert message.startswith(
        f'{mp.LOCALLY_SIGNED_CERT} "mesh-ca-cluster3-intermediate-cert" is signed by CA '
        f"sha256:{mp.cert_fingerprint(other)[:16]}; expected sha256:{mp.cert_fingerprint(root)[:16]}"
    )
    assert '"mesh-ca-cluster1-intermediate-cert", "mesh-ca-cluster2-intermediate-cert"' in message


def test_intermediates_agreeing_on_a_ca_other_than_the_stack_root_are_rejected(dev):
    root, other = pems(dev)
    root_cert = stack_resource(mp.SELF_SIGNED_CERT, "mesh-ca-root-cert", {"isCaCertificate": True, "certPem": root})
    messages = check_stack(mp.INTERMEDIATE_CAS, [
        root_cert, intermediate("cluster1", other), intermediate("cluster2", other),
    ])
    assert len(messages) == 2
    assert all("the stack's self-signed root" in m for m in messages)


def test_intermediate_without_a_ca_certificate_is_rejected():
    [message] = check_stack(mp.INTERMEDIATE_CAS, [intermediate("cluster1", None)])
    assert message == (f'{mp.LOCALLY_SIGNED_CERT} "mesh-ca-cluster1-intermediate-cert" has no caCertPem; '
                       "expected the mesh's single root CA")


def test_unknown_ca_values_in_preview_are_skipped_but_known_ones_still_fail(dev):
    root, _ = pems(dev)
    unknown = intermediate("cluster2", UNKNOWN_STRING_VALUE, isCaCertificate=UNKNOWN_BOOLEAN_VALUE,
                           allowedUses=UNKNOWN_ARRAY_VALUE)
    partly_unknown_uses = intermediate("cluster3", root, allowedUses=[UNKNOWN_STRING_VALUE, "digital_signature"])
    assert check_stack(mp.INTERMEDIATE_CAS, [intermediate("cluster1", root), unknown, partly_unknown_uses]) == []

    not_a_ca = intermediate("cluster2", UNKNOWN_STRING_VALUE, isCaCertificate=False)
    [message] = check_stack(mp.INTERMEDIATE_CAS, [intermediate("cluster1", root), not_a_ca])
    assert "has isCaCertificate false; expected true" in message


# 3b. Root rotation order -------------------------------------------------------------------------


def cacerts_secret(recording: Recording, cluster: str, encoding: str = "stringData", **files: str) -> PolicyResource:
    """A cluster's cacerts as the pack sees it: stringData as the program sends it, or `data` (base64) as
    pulumi-kubernetes normalizes it; `files` replace some of the recording's."""
    secret = recording.named(f"{cluster}-cacerts", mp.SECRET)
    content = {**secret.inputs["stringData"], **files}
    if encoding == "data":
        content = {k: base64.b64encode(v.encode()).decode() for k, v in content.items()}
    return stack_resource(mp.SECRET, secret.name, {"metadata": secret.inputs["metadata"], encoding: content})


def rotation_files(steps: dict[str, Recording], cluster: str, step: str) -> dict[str, str]:
    return steps[step].named(f"{cluster}-cacerts").inputs["stringData"]


@pytest.mark.parametrize("encoding", ["stringData", "data"])
def test_a_cluster_switched_while_another_does_not_trust_the_new_root_is_rejected(rotation_steps, encoding):
    # cluster1 issues from the new root (switch) while cluster2 and cluster3 still trust the old root only.
    switched = rotation_files(rotation_steps, "cluster1", "switch cluster1")
    resources = [cacerts_secret(rotation_steps["before"], "cluster1", encoding, **switched),
                 cacerts_secret(rotation_steps["before"], "cluster2", encoding),
                 cacerts_secret(rotation_steps["before"], "cluster3", encoding)]
    [message] = check_stack(mp.ROTATION_ORDER, resources)
    new_root = mp.cert_fingerprints(switched["cert-chain.pem"])[-1]
    assert message.startswith(f'{mp.SECRET} "cluster1-cacerts" issues from root sha256:{new_root[:16]} (the last '
                              'certificate of its cert-chain.pem), which the root-cert.pem of "cluster2-cacerts", '
                              '"cluster3-cacerts" does not hold')


def test_dropping_the_old_root_while_a_cluster_still_issues_from_it_is_rejected(rotation_steps):
    # cluster1 and cluster2 finalized (new root only) while cluster3 still issues from the old root.
    resources = [cacerts_secret(rotation_steps["switch cluster2"], c, **rotation_files(rotation_steps, c, "finalize"))
                 for c in ("cluster1", "cluster2")] + [cacerts_secret(rotation_steps["switch cluster2"], "cluster3")]
    [message] = check_stack(mp.ROTATION_ORDER, resources)
    assert message.startswith(f'{mp.SECRET} "cluster3-cacerts" issues from root sha256:')
    assert 'the root-cert.pem of "cluster1-cacerts", "cluster2-cacerts" does not hold' in message


def test_unknown_cacerts_in_preview_are_skipped(rotation_steps):
    unknown = stack_resource(mp.SECRET, "cluster1-cacerts", {"metadata": {"name": "cacerts"},
                                                             "data": UNKNOWN_STRING_VALUE})
    assert check_stack(mp.ROTATION_ORDER, [unknown, cacerts_secret(rotation_steps["trust"], "cluster2")]) == []


def test_every_phase_of_the_staged_rotation_passes_every_policy(rotation_steps):
    for step, recording in rotation_steps.items():
        assert pack_violations(recording) == [], step
    # Not vacuous: two roots and intermediates under each of them were seen.
    switched = rotation_steps["switch cluster1"]
    assert len(switched.of_type(mp.SELF_SIGNED_CERT)) == 2
    assert len({r.inputs["caCertPem"] for r in switched.of_type(mp.LOCALLY_SIGNED_CERT)}) == 2


# 4. Load balancers ------------------------------------------------------------------------------


def test_service_of_type_load_balancer_is_rejected():
    args = resource_args(mp.SERVICE, "cluster2-exo-webtest-service",
                         {"metadata": {"name": "exo-webtest"}, "spec": {"type": "LoadBalancer", "ports": []}})
    [message] = check(mp.LOAD_BALANCERS, args)
    assert message.startswith(
        f'{mp.SERVICE} "cluster2-exo-webtest-service" has spec.type LoadBalancer; expected ClusterIP or NodePort'
    )


@pytest.mark.parametrize("values", [{}, {"service": {"type": "LoadBalancer"}}], ids=["chart-default", "explicit"])
def test_gateway_release_not_allowed_a_load_balancer_is_rejected(values):
    args = resource_args(mp.HELM_RELEASE, "cluster1-public", release("public-gateway", "gateway", values))
    [message] = check(mp.LOAD_BALANCERS, args)
    assert '"cluster1-public" installs Istio\'s gateway chart as release "public-gateway"' in message
    assert 'expected values.service.type "ClusterIP" or "NodePort"' in message
    if not values:
        assert "unset (the chart's default, LoadBalancer)" in message


def test_eastwest_release_renaming_its_service_is_rejected():
    values = {"name": "public-gateway", "service": {"type": "LoadBalancer"}}
    args = resource_args(mp.HELM_RELEASE, "cluster1-istio-eastwest", release(mp.EASTWEST_GATEWAY, "gateway", values))
    [message] = check(mp.LOAD_BALANCERS, args)
    assert 'release "istio-eastwestgateway", values.name "public-gateway"' in message


STACK_OWNED = {"annotations": {f"{mp.CCM_ANNOTATION}id": "nlb-id", f"{mp.CCM_ANNOTATION}external": "true"}}


@pytest.mark.parametrize("release_name", mp.LOAD_BALANCED_GATEWAYS)
@pytest.mark.parametrize("values", [{}, {"service": {"type": "LoadBalancer"}}], ids=["chart-default", "explicit"])
def test_gateway_load_balancer_made_by_the_cloud_controller_is_rejected(release_name, values):
    args = resource_args(mp.HELM_RELEASE, f"cluster1-{release_name}", release(release_name, "gateway", values))
    [message] = check(mp.LOAD_BALANCERS, args)
    assert "that the cloud controller would create itself" in message and "external" in message


@pytest.mark.parametrize(("release_name", "values"), [
    (mp.EASTWEST_GATEWAY, {"name": mp.EASTWEST_GATEWAY, "service": {"type": "LoadBalancer", **STACK_OWNED}}),
    (mp.EASTWEST_GATEWAY, {"service": STACK_OWNED}),
    ("istio-ingressgateway", {"service": {"type": "LoadBalancer", **STACK_OWNED}}),
    ("istio-ingressgateway", {"service": {"type": "ClusterIP"}}),
    ("istio-ingressgateway", {"service": {"type": UNKNOWN_STRING_VALUE}}),
])
def test_eastwest_gateway_and_internal_gateways_pass(release_name, values):
    args = resource_args(mp.HELM_RELEASE, f"cluster1-{release_name}", release(release_name, "gateway", values))
    assert check(mp.LOAD_BALANCERS, args) == []


# 5. Production: pro service level, 3+ nodes -----------------------------------------------------


def test_prod_cluster_on_the_starter_service_level_is_rejected():
    args = resource_args(mp.SKS_CLUSTER, "cluster1", {"serviceLevel": "starter"}, stack="prod")
    assert check(mp.PRODUCTION, args) == [
        f'{mp.SKS_CLUSTER} "cluster1" in production stack "prod" has serviceLevel "starter"; expected "pro" '
        "(starter has no HA control plane, etcd backup or SLA)"
    ]


def test_prod_nodepool_with_fewer_than_three_nodes_is_rejected():
    args = resource_args(mp.SKS_NODEPOOL, "cluster1-nodepool", {"size": 2.0}, stack="prod")
    assert check(mp.PRODUCTION, args) == [
        f'{mp.SKS_NODEPOOL} "cluster1-nodepool" in production stack "prod" has size 2; expected at least 3 nodes'
    ]


def test_non_prod_stacks_may_use_starter_and_two_nodes():
    assert check(mp.PRODUCTION, resource_args(mp.SKS_CLUSTER, "cluster1", {"serviceLevel": "starter"})) == []
    assert check(mp.PRODUCTION, resource_args(mp.SKS_NODEPOOL, "cluster1-nodepool", {"size": 2.0})) == []


def test_prod_stacks_come_from_the_policy_config():
    config = {"prodStacks": ["production-*"]}
    flagged = resource_args(mp.SKS_NODEPOOL, "np", {"size": 1.0}, stack="production-eu", config=config)
    not_prod_here = resource_args(mp.SKS_NODEPOOL, "np", {"size": 1.0}, stack="prod", config=config)
    assert len(check(mp.PRODUCTION, flagged)) == 1
    assert check(mp.PRODUCTION, not_prod_here) == []


def test_unknown_prod_sizing_in_preview_is_skipped():
    level = resource_args(mp.SKS_CLUSTER, "cluster1", {"serviceLevel": UNKNOWN_STRING_VALUE}, stack="prod")
    assert check(mp.PRODUCTION, level) == []


def test_dev_settings_in_a_prod_stack_are_rejected():
    messages = pack_violations(run_program(stack_config("dev"), stack="prod"))
    assert sorted(messages) == sorted([
        *(f'{mp.SKS_CLUSTER} "{c}" in production stack "prod" has serviceLevel "starter"; expected "pro" '
          "(starter has no HA control plane, etcd backup or SLA)" for c in ("cluster1", "cluster2")),
        *(f'{mp.SKS_NODEPOOL} "{c}-nodepool" in production stack "prod" has size 2; expected at least 3 nodes'
          for c in ("cluster1", "cluster2")),
    ])


# The program's real resources -------------------------------------------------------------------


def test_dev_stack_passes_every_policy(dev):
    assert pack_violations(dev) == []


def test_prod_stack_passes_every_policy(prod):
    # Not vacuous: the policies saw what they check.
    assert {r.urn.split("::")[0] for r in prod.resources} == {"urn:pulumi:prod"}
    assert len(prod.of_type(mp.SKS_CLUSTER)) == len(prod.of_type(mp.SKS_NODEPOOL)) == 3
    assert len(prod.of_type(mp.HELM_RELEASE)) == 9
    assert len(prod.of_type(mp.LOCALLY_SIGNED_CERT)) == 3
    assert pack_violations(prod) == []


def test_stack_with_the_demo_ingress_passes_every_policy():
    recording = run_program({**stack_config("dev"), "demoIngressWeights": {"cluster2": 100}})
    gateways = [r for r in recording.of_type(mp.HELM_RELEASE) if r.inputs["chart"] == "gateway"]
    assert sorted(r.inputs["name"] for r in gateways) == [
        "istio-eastwestgateway", "istio-eastwestgateway", "istio-ingressgateway"]
    assert pack_violations(recording) == []


# The pack itself --------------------------------------------------------------------------------


def test_policy_pack_entry_point_builds_one_mandatory_pack_of_every_policy(monkeypatch):
    built: list[dict[str, Any]] = []
    monkeypatch.setattr(pulumi_policy, "PolicyPack", lambda **kwargs: built.append(kwargs))
    try:
        runpy.run_path(str(POLICY_DIR), run_name="__main__")  # as the CLI's analyzer shim does
    finally:
        sys.modules.pop("mesh_policies", None)
    [pack] = built
    assert pack["name"] == "sks-istio-mesh-invariants"
    assert pack["enforcement_level"] == EnforcementLevel.MANDATORY
    assert [p.name for p in pack["policies"]] == [p.name for p in mp.POLICIES]
    assert len({p.name for p in mp.POLICIES}) == 6


def test_policy_pack_runs_in_the_project_venv_with_pinned_requirements():
    project = yaml.safe_load((POLICY_DIR / "PulumiPolicy.yaml").read_text())
    assert project["runtime"]["name"] == "python"
    assert (POLICY_DIR / project["runtime"]["options"]["virtualenv"]).resolve() == (ROOT / "venv").resolve()
    pins = (POLICY_DIR / "requirements.txt").read_text().split()
    assert pins == ["pulumi-policy==1.21.0", "pulumi==3.272.0", "pulumi-kubernetes==4.34.2"]
    assert set(pins) <= set((ROOT / "requirements.txt").read_text().split()) | set(
        (ROOT / "requirements-dev.txt").read_text().split())
