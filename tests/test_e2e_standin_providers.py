"""The e2e's stand-in provider plugins (e2e/providers/), called directly: replace rules read from
the real providers' Terraform schemas, real TLS material, kubeconfig renewal, and the fake cloud's
loopback API. No engine, no control plane.

The expected verdicts below are typed from the Terraform sources, not from the stand-ins' tables:
terraform-provider-exoscale v0.66.0 `exoscale/resource_exoscale_*.go` (ForceNew, Update's
HasChange branches) and terraform-provider-tls v4.2.1 `internal/provider/resource_*.go`
(RequiresReplace plan modifiers).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import subprocess
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pulumi.provider.experimental.property_value import PropertyValue
from pulumi.provider.experimental.provider import (
    CheckRequest,
    CreateRequest,
    DeleteRequest,
    DiffRequest,
    PropertyDiffKind,
    ReadRequest,
    UpdateRequest,
)

from e2e.controlplane import CertificateAuthority, kubeconfig
from e2e.fake_exoscale import FakeExoscale, Nlb, Nodepool
from e2e.providers import exoscale, tls
from e2e.providers.base import UNKNOWN, StandInProvider, to_properties

T = TypeVar("T")
NOW = datetime.datetime.now(datetime.UTC)
FAR = (NOW + datetime.timedelta(days=300)).isoformat().replace("+00:00", "Z")
PEM_A = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"
PEM_B = "-----BEGIN EC PRIVATE KEY-----\nBBBB\n-----END EC PRIVATE KEY-----\n"
CERT_A = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
CERT_B = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n"
CSR_A = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
CSR_B = "-----BEGIN CERTIFICATE REQUEST-----\nBBBB\n-----END CERTIFICATE REQUEST-----\n"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Awaits a provider call on a loop of its own: asyncio.run would also unset the thread's
    event loop, which the mocks-based tests of the program still use."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def urn(token: str, name: str = "r") -> str:
    return f"urn:pulumi:dev::mesh::{token}::{name}"


def props(values: dict[str, Any], secrets: frozenset[str] = frozenset()) -> dict[str, PropertyValue]:
    return to_properties(values, secrets)


def plain(values: dict[str, PropertyValue]) -> dict[str, Any]:
    from e2e.providers.base import plain_map  # noqa: PLC0415 - beside its only use

    return plain_map(values)


# A state as the real provider would hold it (inputs plus computed outputs), per type token.
STATES: dict[str, dict[str, Any]] = {
    "exoscale:index/securityGroup:SecurityGroup": {"name": "mesh-a-nodes", "description": "SKS nodes of mesh-a"},
    "exoscale:index/securityGroupRule:SecurityGroupRule": {
        "securityGroupId": "sg-1", "securityGroup": "mesh-a-nodes", "type": "INGRESS", "protocol": "TCP",
        "startPort": 30000, "endPort": 32767, "cidr": "0.0.0.0/0", "description": "NodePorts"},
    "exoscale:index/antiAffinityGroup:AntiAffinityGroup": {"name": "mesh-a-nodes", "description": "spread"},
    "exoscale:index/sksCluster:SksCluster": {
        "name": "mesh-a", "zone": "ch-gva-2", "version": "1.34.2", "cni": "calico", "serviceLevel": "pro",
        "exoscaleCcm": True, "metricsServer": True, "exoscaleCsi": False, "autoUpgrade": False,
        "labels": {"mesh": "m"}, "description": "Istio mesh", "enableKubeProxy": True,
        "endpoint": "https://127.0.0.1:6443", "state": "running"},
    "exoscale:index/sksNodepool:SksNodepool": {
        "clusterId": "c-1", "zone": "ch-gva-2", "name": "mesh-a-default", "instanceType": "standard.large",
        "size": 3, "diskSize": 50, "instancePrefix": "pool", "ipv6": False, "storageLvm": False,
        "securityGroupIds": ["sg-1", "sg-2"], "antiAffinityGroupIds": ["aag-1"], "labels": {"mesh": "m"},
        "instancePoolId": "ip-1", "state": "running"},
    "exoscale:index/sksKubeconfig:SksKubeconfig": {
        "clusterId": "c-1", "zone": "ch-gva-2", "user": "kubernetes-admin", "groups": ["system:masters"],
        "ttlSeconds": 86400, "earlyRenewalSeconds": 3600, "readyForRenewal": False},  # + "kubeconfig" below
    "exoscale:index/nlb:Nlb": {"zone": "ch-gva-2", "name": "mesh-a-eastwest", "description": "east-west",
                               "labels": {"mesh": "m"}, "ipAddress": "192.0.2.10", "state": "running"},
    "tls:index/privateKey:PrivateKey": {"algorithm": "ECDSA", "ecdsaCurve": "P256", "rsaBits": 2048,
                                        "privateKeyPem": PEM_A},
    "tls:index/certRequest:CertRequest": {"privateKeyPem": PEM_A, "subject": {"commonName": "Intermediate CA"},
                                          "dnsNames": ["istiod.istio-system.svc"], "certRequestPem": CSR_A},
    "tls:index/selfSignedCert:SelfSignedCert": {
        "privateKeyPem": PEM_A, "subject": {"organization": "Acme", "commonName": "Root CA"},
        "validityPeriodHours": 87600, "allowedUses": ["cert_signing", "crl_signing"], "isCaCertificate": True,
        "setSubjectKeyId": True, "setAuthorityKeyId": False, "earlyRenewalHours": 0,
        "certPem": CERT_A, "validityEndTime": FAR, "readyForRenewal": False},
    "tls:index/locallySignedCert:LocallySignedCert": {
        "certRequestPem": CSR_A, "caCertPem": CERT_A, "caPrivateKeyPem": PEM_A, "validityPeriodHours": 8760,
        "allowedUses": ["cert_signing"], "isCaCertificate": True, "setSubjectKeyId": True,
        "earlyRenewalHours": 720, "certPem": CERT_B, "validityEndTime": FAR, "readyForRenewal": False},
}
SG, RULE, AAG, CLUSTER, POOL, KUBECONFIG, NLB, KEY, CSR, SELF, LOCAL = STATES

# (type token, input, new value, "replace" or "update"), each from the Terraform source named.
RULES = [
    # resource_exoscale_security_group.go
    (SG, "name", "other", "replace"),  # ForceNew
    (SG, "description", "other", "replace"),  # ForceNew
    (SG, "externalSources", ["198.51.100.0/24"], "update"),  # HasChange in Update
    # resource_exoscale_security_group_rule.go: no Update, all ForceNew
    (RULE, "securityGroupId", "sg-2", "replace"),
    (RULE, "type", "EGRESS", "replace"),
    (RULE, "protocol", "UDP", "replace"),
    (RULE, "startPort", 30001, "replace"),
    (RULE, "endPort", 32000, "replace"),
    (RULE, "cidr", "10.0.0.0/8", "replace"),
    (RULE, "description", "other", "replace"),
    (RULE, "userSecurityGroupId", "sg-2", "replace"),
    (RULE, "icmpType", 8, "replace"),
    (RULE, "icmpCode", 0, "replace"),
    # pkg/resources/anti_affinity_group/resource.go: ForceNew both
    (AAG, "name", "other", "replace"),
    (AAG, "description", "other", "replace"),
    # resource_exoscale_sks_cluster.go
    (CLUSTER, "zone", "de-fra-1", "replace"),  # ForceNew
    (CLUSTER, "enableKubeProxy", False, "replace"),  # ForceNew
    (CLUSTER, "version", "1.35.0", "update"),  # HasChange: upgrade
    (CLUSTER, "labels", {"mesh": "n"}, "update"),
    (CLUSTER, "description", "other", "update"),
    (CLUSTER, "name", "other", "update"),
    (CLUSTER, "autoUpgrade", True, "update"),
    (CLUSTER, "cni", "cilium", "update"),  # not ForceNew (and not applied by Update)
    (CLUSTER, "serviceLevel", "starter", "update"),  # not ForceNew (and not applied by Update)
    # resource_exoscale_sks_nodepool.go
    (POOL, "clusterId", "c-2", "replace"),  # ForceNew
    (POOL, "zone", "de-fra-1", "replace"),  # ForceNew
    (POOL, "size", 4, "update"),
    (POOL, "instanceType", "standard.huge", "update"),
    (POOL, "diskSize", 100, "update"),
    (POOL, "labels", {"mesh": "n"}, "update"),
    (POOL, "securityGroupIds", ["sg-3"], "update"),
    (POOL, "antiAffinityGroupIds", ["aag-2"], "update"),
    (POOL, "name", "other", "update"),
    # resource_exoscale_sks_kubeconfig.go
    (KUBECONFIG, "clusterId", "c-2", "replace"),
    (KUBECONFIG, "zone", "de-fra-1", "replace"),
    (KUBECONFIG, "user", "other", "replace"),
    (KUBECONFIG, "groups", ["other"], "replace"),
    (KUBECONFIG, "ttlSeconds", 7200, "replace"),
    (KUBECONFIG, "earlyRenewalSeconds", 60, "update"),
    # resource_exoscale_nlb.go
    (NLB, "zone", "de-fra-1", "replace"),  # ForceNew
    (NLB, "name", "other", "update"),
    (NLB, "description", "other", "update"),
    (NLB, "labels", {"mesh": "n"}, "update"),
    # terraform-provider-tls resource_private_key.go
    (KEY, "algorithm", "RSA", "replace"),
    (KEY, "ecdsaCurve", "P384", "replace"),
    (KEY, "rsaBits", 4096, "replace"),
    # resource_cert_request.go
    (CSR, "privateKeyPem", PEM_B, "replace"),
    (CSR, "subject", {"commonName": "Other"}, "replace"),
    (CSR, "dnsNames", ["other.svc"], "replace"),
    (CSR, "ipAddresses", ["192.0.2.1"], "replace"),
    (CSR, "uris", ["spiffe://x"], "replace"),
    # resource_self_signed_cert.go
    (SELF, "privateKeyPem", PEM_B, "replace"),
    (SELF, "subject", {"organization": "Other", "commonName": "Root CA"}, "replace"),
    (SELF, "validityPeriodHours", 1000, "replace"),
    (SELF, "allowedUses", ["cert_signing"], "replace"),
    (SELF, "isCaCertificate", False, "replace"),
    (SELF, "setSubjectKeyId", False, "replace"),
    (SELF, "setAuthorityKeyId", True, "replace"),
    (SELF, "dnsNames", ["x.example"], "replace"),
    (SELF, "maxPathLength", 1, "replace"),
    (SELF, "earlyRenewalHours", 24, "update"),
    # resource_locally_signed_cert.go
    (LOCAL, "certRequestPem", CSR_B, "replace"),
    (LOCAL, "caCertPem", CERT_B, "replace"),
    (LOCAL, "caPrivateKeyPem", PEM_B, "replace"),
    (LOCAL, "validityPeriodHours", 100, "replace"),
    (LOCAL, "allowedUses", ["digital_signature"], "replace"),
    (LOCAL, "isCaCertificate", False, "replace"),
    (LOCAL, "setSubjectKeyId", False, "replace"),
    (LOCAL, "earlyRenewalHours", 24, "update"),
]


def a_kubeconfig(valid_for: datetime.timedelta) -> str:
    ca = CertificateAuthority.create("sks")
    cert, key = ca.issue("kubernetes-admin", ("system:masters",), validity=valid_for)
    return kubeconfig("https://127.0.0.1:6443", ca.cert_pem, "kubernetes-admin", cert, key)


STATES[KUBECONFIG]["kubeconfig"] = a_kubeconfig(datetime.timedelta(days=2))


def provider_for(token: str) -> StandInProvider:
    return tls.provider() if token.startswith("tls:") else exoscale.provider(exoscale.CloudClient("http://127.0.0.1:9"))


def checked(token: str, inputs: dict[str, Any]) -> dict[str, PropertyValue]:
    response = run(provider_for(token).check(CheckRequest(urn(token), {}, props(inputs), b"")))
    assert not response.failures, [(f.property, f.reason) for f in response.failures]
    assert response.inputs is not None
    return response.inputs


def diff(token: str, olds: dict[str, Any], news: dict[str, Any], ignore: list[str] | None = None):
    # The engine diffs the new inputs as Check returned them (defaults filled in).
    return run(provider_for(token).diff(
        DiffRequest(urn(token), "id-1", props(olds), checked(token, news), ignore or [])))


# The outputs in STATES that the program does not send (the SDKs' output-only properties).
OUTPUTS = {
    RULE: {"securityGroup"}, CLUSTER: {"endpoint", "state"}, POOL: {"instancePoolId", "state"},
    KUBECONFIG: {"kubeconfig", "readyForRenewal"}, NLB: {"ipAddress", "state"}, KEY: {"privateKeyPem"},
    CSR: {"certRequestPem"}, SELF: {"certPem", "validityEndTime", "readyForRenewal"},
    LOCAL: {"certPem", "validityEndTime", "readyForRenewal"},
}


def inputs_of(token: str) -> dict[str, Any]:
    """The state's inputs only (what the program would send again)."""
    return {k: v for k, v in STATES[token].items() if k not in OUTPUTS.get(token, set())}


@pytest.mark.parametrize(("token", "key", "value", "verdict"), RULES,
                         ids=[f"{t.rsplit(':', 1)[-1]}.{k}" for t, k, _, _ in RULES])
def test_each_input_replaces_or_updates_as_the_terraform_schema_says(token: str, key: str, value: Any, verdict: str):
    response = diff(token, STATES[token], {**inputs_of(token), key: value})
    assert response.changes is True
    assert list(response.detailed_diff) == [key]
    if verdict == "replace":
        assert response.replaces == [key]
        assert response.detailed_diff[key].kind in {PropertyDiffKind.UPDATE_REPLACE, PropertyDiffKind.ADD_REPLACE}
    else:
        assert response.replaces == []
        assert response.detailed_diff[key].kind in {PropertyDiffKind.UPDATE, PropertyDiffKind.ADD}
    assert response.delete_before_replace is False


@pytest.mark.parametrize("token", list(STATES), ids=[t.rsplit(":", 1)[-1] for t in STATES])
def test_the_same_inputs_again_change_nothing(token: str):
    response = diff(token, STATES[token], inputs_of(token))
    assert response.changes is False, response.detailed_diff
    assert response.replaces == []


def test_an_unknown_new_value_of_a_force_new_input_is_a_replacement():
    # Terraform plans an unknown ForceNew value as "forces replacement" (a replaced security group).
    response = diff(RULE, STATES[RULE], {**inputs_of(RULE), "securityGroupId": UNKNOWN})
    assert response.replaces == ["securityGroupId"]


def test_set_inputs_ignore_order_and_optional_computed_inputs_left_out_keep_the_state():
    news = {**inputs_of(POOL), "securityGroupIds": ["sg-2", "sg-1"]}
    assert diff(POOL, STATES[POOL], news).changes is False
    # The rule's security group name is computed from its id: not sending it is no change.
    assert "securityGroup" not in inputs_of(RULE)
    assert diff(RULE, STATES[RULE], inputs_of(RULE)).changes is False


def test_removing_an_updatable_input_is_a_delete_diff_not_a_replacement():
    news = {k: v for k, v in inputs_of(NLB).items() if k != "description"}
    response = diff(NLB, STATES[NLB], news)
    assert response.detailed_diff["description"].kind is PropertyDiffKind.DELETE
    assert response.replaces == []


def test_ignore_changes_sent_with_the_diff_are_honoured():
    news = {**inputs_of(SG), "description": "reworded"}
    assert diff(SG, STATES[SG], news, ignore=["description"]).changes is False


def test_check_fills_the_terraform_defaults_and_rejects_what_the_schema_rejects():
    filled = plain(checked(KEY, {"algorithm": "ECDSA"}))
    # resource_private_key.go: rsa_bits Default 2048, ecdsa_curve Default P224.
    assert filled == {"algorithm": "ECDSA", "rsaBits": 2048, "ecdsaCurve": "P224"}
    filled = plain(checked(RULE, {"securityGroupId": "sg-1", "type": "INGRESS"}))
    assert filled["protocol"] == "TCP"  # resource_exoscale_security_group_rule.go Default "TCP"
    response = run(tls.provider().check(CheckRequest(
        urn(KEY), {}, props({"algorithm": "DSA", "bogus": 1}), b"")))
    assert {f.property for f in response.failures or []} == {"algorithm", "bogus"}


# Real TLS material ------------------------------------------------------------------------------
def create(provider: StandInProvider, token: str, inputs: dict[str, Any],
           secrets: frozenset[str] = frozenset()) -> tuple[str, dict[str, PropertyValue]]:
    properties = checked(token, inputs)
    properties = {k: v.with_secret(k in secrets or v.is_secret) for k, v in properties.items()}
    response = run(provider.create(CreateRequest(urn(token), properties, 60, False)))
    assert response.resource_id
    return response.resource_id, response.properties


def test_tls_makes_a_chain_that_verifies_with_the_real_clock_and_random_serials():
    provider = tls.provider()
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    _, root_key = create(provider, KEY, {"algorithm": "ECDSA", "ecdsaCurve": "P256"})
    root_key_pem = root_key["privateKeyPem"].value
    assert root_key["privateKeyPem"].is_secret and root_key["privateKeyPemPkcs8"].is_secret
    assert str(root_key_pem).startswith("-----BEGIN EC PRIVATE KEY-----")  # SEC 1, as Go's MarshalECPrivateKey
    assert str(root_key["privateKeyPemPkcs8"].value).startswith("-----BEGIN PRIVATE KEY-----")
    root_inputs = {"privateKeyPem": root_key_pem, "subject": {"organization": "Acme", "commonName": "Root CA"},
                   "isCaCertificate": True, "setSubjectKeyId": True, "allowedUses": ["cert_signing", "crl_signing"],
                   "validityPeriodHours": 48}
    root_id, root = create(provider, SELF, root_inputs, frozenset({"privateKeyPem"}))
    other_id, _ = create(provider, SELF, root_inputs, frozenset({"privateKeyPem"}))
    after = datetime.datetime.now(datetime.UTC)
    assert root_id != other_id  # random serials, the id being the serial
    root_cert = x509.load_pem_x509_certificate(str(root["certPem"].value).encode())
    assert str(root_cert.serial_number) == root_id
    assert before <= root_cert.not_valid_before_utc <= after
    assert root_cert.not_valid_after_utc - root_cert.not_valid_before_utc == datetime.timedelta(hours=48)
    assert root_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    usage = root_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert root_cert.subject.rfc4514_string() == "CN=Root CA,O=Acme"

    _, leaf_key = create(provider, KEY, {"algorithm": "RSA", "rsaBits": 2048})
    assert str(leaf_key["privateKeyPem"].value).startswith("-----BEGIN RSA PRIVATE KEY-----")  # PKCS#1
    _, request = create(provider, CSR, {"privateKeyPem": leaf_key["privateKeyPem"].value,
                                        "subject": {"commonName": "Intermediate CA", "locality": "a"},
                                        "dnsNames": ["istiod.istio-system.svc"]}, frozenset({"privateKeyPem"}))
    _, leaf = create(provider, LOCAL, {"certRequestPem": request["certRequestPem"].value,
                                       "caCertPem": root["certPem"].value, "caPrivateKeyPem": root_key_pem,
                                       "isCaCertificate": True, "setSubjectKeyId": True,
                                       "allowedUses": ["cert_signing"], "validityPeriodHours": 24,
                                       "earlyRenewalHours": 2}, frozenset({"caPrivateKeyPem"}))
    assert leaf["caPrivateKeyPem"].is_secret and leaf["caKeyAlgorithm"].value == "ECDSA"
    leaf_cert = x509.load_pem_x509_certificate(str(leaf["certPem"].value).encode())
    leaf_cert.verify_directly_issued_by(root_cert)
    assert leaf_cert.subject.rfc4514_string() == "CN=Intermediate CA,L=a"
    sans = leaf_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc"]
    root_ski = root_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert leaf_cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == root_ski
    public = serialization.load_pem_private_key(str(leaf_key["privateKeyPem"].value).encode(), None).public_key()
    assert isinstance(public, rsa.RSAPublicKey) and leaf_cert.public_key() == public


def test_private_key_public_forms_match_ssh_keygen(tmp_path):
    _, key = create(tls.provider(), KEY, {"algorithm": "ECDSA", "ecdsaCurve": "P256"})
    (tmp_path / "key.pub").write_text(str(key["publicKeyOpenssh"].value))
    # An independent reading of the same public key: OpenSSH's own fingerprints.
    sha256 = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", tmp_path / "key.pub"],
                            capture_output=True, text=True, check=True).stdout.split()[1]
    md5 = subprocess.run(["ssh-keygen", "-l", "-E", "md5", "-f", tmp_path / "key.pub"],
                         capture_output=True, text=True, check=True).stdout.split()[1]
    assert key["publicKeyFingerprintSha256"].value == sha256
    assert f"MD5:{key['publicKeyFingerprintMd5'].value}" == md5
    assert str(key["privateKeyOpenssh"].value).startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    # P-224 has no OpenSSH form: the real provider leaves those outputs empty.
    _, small = create(tls.provider(), KEY, {"algorithm": "ECDSA"})
    assert small["publicKeyOpenssh"].value == "" and small["privateKeyOpenssh"].value == ""


def test_a_certificate_inside_its_early_renewal_window_is_replaced_and_read_says_so():
    ends = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    state = {**STATES[LOCAL], "validityEndTime": ends, "earlyRenewalHours": 3}
    response = diff(LOCAL, state, {**inputs_of(LOCAL), "earlyRenewalHours": 3})
    assert response.replaces == ["readyForRenewal"]
    read = run(tls.provider().read(ReadRequest(urn(LOCAL), "1", props(state), props(inputs_of(LOCAL)))))
    assert read.properties["readyForRenewal"].value is True
    # One hour of early renewal: not yet.
    state = {**state, "earlyRenewalHours": 1}
    assert diff(LOCAL, state, {**inputs_of(LOCAL), "earlyRenewalHours": 1}).changes is False


# Kubeconfig renewal -------------------------------------------------------------------------------
def test_a_kubeconfig_inside_its_early_renewal_window_is_replaced_with_a_new_one():
    # resourceSKSKubeconfigDiff: now >= NotAfter - early_renewal_seconds forces ready_for_renewal new.
    state = {**STATES[KUBECONFIG], "kubeconfig": a_kubeconfig(datetime.timedelta(hours=1))}
    response = diff(KUBECONFIG, state, {**inputs_of(KUBECONFIG), "earlyRenewalSeconds": 2 * 3600})
    assert response.replaces == ["readyForRenewal"]
    # Thirty minutes of early renewal: not yet, only the setting itself changes (in place).
    response = diff(KUBECONFIG, state, {**inputs_of(KUBECONFIG), "earlyRenewalSeconds": 1800})
    assert response.replaces == [] and list(response.detailed_diff) == ["earlyRenewalSeconds"]


def test_a_kubeconfig_outside_its_window_is_left_alone_and_read_does_not_renew_it():
    state = {**STATES[KUBECONFIG], "kubeconfig": a_kubeconfig(datetime.timedelta(days=2))}
    assert diff(KUBECONFIG, state, inputs_of(KUBECONFIG)).changes is False
    # resourceSKSKubeconfigRead does nothing, even past the window: renewal comes from the diff.
    expired = {**state, "kubeconfig": a_kubeconfig(datetime.timedelta(seconds=1)), "earlyRenewalSeconds": 3600}
    provider = exoscale.provider(exoscale.CloudClient("http://127.0.0.1:9"))
    read = run(provider.read(ReadRequest(urn(KUBECONFIG), "1", props(expired), props(inputs_of(KUBECONFIG)))))
    assert read.properties["readyForRenewal"].value is False


# The fake cloud's loopback API ------------------------------------------------------------------
@pytest.fixture
def cloud():
    fake = FakeExoscale({})
    url = fake.serve()
    yield fake, exoscale.provider(exoscale.CloudClient(url))
    fake.close()


def test_the_plugin_drives_the_fake_cloud_over_its_loopback_api(cloud):
    fake, provider = cloud
    group_id, _ = create(provider, SG, {"name": "mesh-a-nodes", "description": "d"})
    _, rule = create(provider, RULE, {"securityGroupId": group_id, "type": "INGRESS", "startPort": 443,
                                      "endPort": 443, "cidr": "0.0.0.0/0"})
    assert rule["securityGroup"].value == "mesh-a-nodes"  # the API resolves the group's name
    nlb_id, nlb = create(provider, NLB, {"zone": "ch-gva-2", "name": "mesh-a-eastwest", "description": "one"})
    assert str(nlb["ipAddress"].value).startswith("192.0.2.")
    assert fake.nlbs[nlb_id].ip == nlb["ipAddress"].value
    updated = run(provider.update(UpdateRequest(
        urn(NLB), nlb_id, nlb, checked(NLB, {"zone": "ch-gva-2", "name": "renamed", "description": "two"}),
        60, [], False)))
    assert plain(updated.properties)["description"] == "two" and fake.nlbs[nlb_id].name == "renamed"
    run(provider.delete(DeleteRequest(urn(NLB), nlb_id, updated.properties, 60)))
    assert nlb_id in fake.deleted_nlbs and nlb_id not in fake.nlbs
    gone = run(provider.read(ReadRequest(urn(NLB), nlb_id, updated.properties, {})))
    assert gone.resource_id == ""
    assert [(e.action, e.kind) for e in fake.events] == [
        ("create", "SecurityGroup"), ("create", "SecurityGroupRule"), ("create", "Nlb"), ("update", "Nlb"),
        ("delete", "Nlb")]


def test_the_fake_cloud_refuses_to_delete_a_nodepool_an_nlb_still_targets(cloud):
    fake, provider = cloud
    fake.nodepools["np-1"] = Nodepool("np-1", "c-1", "pool-1", [])
    fake.states["np-1"] = ("SksNodepool", {"clusterId": "c-1"})
    fake.nlbs["nlb-1"] = Nlb("nlb-1", "mesh-a-eastwest", "192.0.2.10", services={"uid-1": "pool-1"})
    with pytest.raises(exoscale.CloudError, match="409 instance pool pool-1 is still the target"):
        run(provider.delete(DeleteRequest(urn(POOL), "np-1", {}, 60)))
    assert "np-1" in fake.nodepools


def test_the_plugin_refuses_an_endpoint_that_is_not_loopback():
    client = exoscale.CloudClient("http://192.0.2.1:8080")
    with pytest.raises(exoscale.CloudError, match="loopback"):
        client.call("GET", "Nlb", "x")


def test_kubeconfig_certificates_reads_every_certificate_of_a_kubeconfig():
    text = a_kubeconfig(datetime.timedelta(hours=1))
    certificates = exoscale.kubeconfig_certificates(text)
    document = yaml.safe_load(text)
    expected = [document["clusters"][0]["cluster"]["certificate-authority-data"],
                document["users"][0]["user"]["client-certificate-data"]]
    assert [c.public_bytes(serialization.Encoding.PEM) for c in certificates] == [base64.b64decode(b) for b in expected]
    assert isinstance(certificates[1].public_key(), ec.EllipticCurvePublicKey)


class OneCertificateAuthority:
    """What the fake cloud needs of a control plane for a cluster and its kubeconfigs: an API
    endpoint and the cluster's CA (no Kubernetes API is called for these two)."""

    endpoint = "https://127.0.0.1:6443"

    def __init__(self) -> None:
        self.ca = CertificateAuthority.create("kubernetes")


def test_a_cluster_and_its_kubeconfig_from_the_fake_cloud_follow_the_real_provider():
    control_plane = OneCertificateAuthority()
    fake = FakeExoscale({"a": control_plane}, ccm=False)  # type: ignore[dict-item]
    provider = exoscale.provider(exoscale.CloudClient(fake.serve()))
    try:
        cluster_inputs = {"name": "mesh-a", "zone": "ch-gva-2", "cni": "calico", "description": "one"}
        cluster_id, cluster = create(provider, CLUSTER, cluster_inputs)
        assert cluster["endpoint"].value == control_plane.endpoint
        assert cluster["controlPlaneCa"].value == control_plane.ca.cert_pem

        before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        kubeconfig_id, config = create(provider, KUBECONFIG, {
            "clusterId": cluster_id, "zone": "ch-gva-2", "user": "kubernetes-admin",
            "groups": ["system:masters"], "ttlSeconds": 3600})
        assert config["kubeconfig"].is_secret
        ca_cert, client_cert = exoscale.kubeconfig_certificates(str(config["kubeconfig"].value))
        client_cert.verify_directly_issued_by(control_plane.ca.cert)
        assert client_cert.subject.rfc4514_string() == "CN=kubernetes-admin,O=system:masters"
        assert before + datetime.timedelta(hours=1) <= client_cert.not_valid_after_utc
        assert client_cert.not_valid_after_utc <= datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        # kubeconfigToID: the certificates' serial numbers.
        assert kubeconfig_id == f"{ca_cert.serial_number}:{client_cert.serial_number}"
        # An early renewal of 3600 s on a one-hour certificate: due now, so a new kubeconfig.
        state = config
        news = checked(KUBECONFIG, {**plain(state), "earlyRenewalSeconds": 3600, "kubeconfig": None,
                                    "readyForRenewal": None})
        response = run(provider.diff(DiffRequest(urn(KUBECONFIG), kubeconfig_id, state, news, [])))
        assert "readyForRenewal" in response.replaces

        # cni "may only be set at creation time": the update leaves it, the description changes.
        news = checked(CLUSTER, {**cluster_inputs, "cni": "cilium", "description": "two"})
        updated = run(provider.update(UpdateRequest(urn(CLUSTER), cluster_id, cluster, news, 60, [], False)))
        assert plain(updated.properties)["cni"] == "calico"
        assert plain(updated.properties)["description"] == "two"

        fake.nodepools["np-1"] = Nodepool("np-1", cluster_id, "pool-1", [])
        with pytest.raises(exoscale.CloudError, match=r"409 SKS cluster .* still has nodepools"):
            run(provider.delete(DeleteRequest(urn(CLUSTER), cluster_id, updated.properties, 60)))
        del fake.nodepools["np-1"]
        run(provider.delete(DeleteRequest(urn(CLUSTER), cluster_id, updated.properties, 60)))
        assert fake.states.keys() == {kubeconfig_id}
    finally:
        fake.close()


def test_the_fake_cloud_refuses_to_delete_a_group_a_nodepool_still_uses(cloud):
    fake, provider = cloud
    group_id, group = create(provider, SG, {"name": "mesh-a-nodes"})
    fake.states["np-1"] = ("SksNodepool", {"name": "mesh-a-default", "securityGroupIds": [group_id]})
    with pytest.raises(exoscale.CloudError, match=r"409 group .* is still in use by nodepool mesh-a-default"):
        run(provider.delete(DeleteRequest(urn(SG), group_id, group, 60)))
    del fake.states["np-1"]
    run(provider.delete(DeleteRequest(urn(SG), group_id, group, 60)))
    assert group_id not in fake.states


def test_a_resource_under_components_is_served_by_its_own_type_token():
    """The program's resources sit under components, so their URN types are qualified by their
    parents' (`Mesh$MeshCluster$exoscale:...`); the plugin must serve them by their own token."""
    nested = f"urn:pulumi:dev::mesh::sks-istio-mesh:index:Mesh$sks-istio-mesh:index:MeshCluster${SG}::cluster1-nodes"
    response = run(provider_for(SG).check(CheckRequest(nested, {}, props(STATES[SG]), b"")))
    assert not response.failures and plain(response.inputs)["name"] == STATES[SG]["name"]
