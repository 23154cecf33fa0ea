"""The mesh CA: verified with `cryptography` on the real keys and certificates the mocks issue
from the program's inputs, the way istiod and openssl would see them."""

import datetime

import pulumi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from testing import engine
from testing.mocks import pem_private
from testing.program import Recording, is_wire_secret, run_failing_program, run_program, stack_config

CLUSTERS = ("cluster1", "cluster2")
ISTIOD_SAN = "istiod.istio-system.svc"


def cacerts(recording: Recording, cluster: str) -> dict[str, str]:
    secret = recording.named(f"{cluster}-cacerts", "kubernetes:core/v1:Secret")
    assert secret.inputs["metadata"]["name"] == "cacerts"
    assert secret.inputs["metadata"]["namespace"] == "istio-system"
    return secret.inputs["stringData"]


def certs(pem: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem.encode())


def attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    return name.get_attributes_for_oid(oid)[0].value


def test_cacerts_secret_has_the_four_files_istio_reads(dev):
    for cluster in CLUSTERS:
        assert set(cacerts(dev, cluster)) == {"ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"}


def test_every_intermediate_is_signed_by_the_shared_root(dev):
    roots = {cacerts(dev, c)["root-cert.pem"] for c in CLUSTERS}
    assert len(roots) == 1, "all clusters must share one root"
    (root,) = certs(roots.pop())
    root.verify_directly_issued_by(root)  # self-signed
    for cluster in CLUSTERS:
        (intermediate,) = certs(cacerts(dev, cluster)["ca-cert.pem"])
        intermediate.verify_directly_issued_by(root)
        assert intermediate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == \
            root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.key_identifier


def test_root_and_intermediates_are_cas_allowed_to_sign_certificates(dev):
    for cluster in CLUSTERS:
        for cert in certs(cacerts(dev, cluster)["cert-chain.pem"]):
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
            assert constraints.critical and constraints.value.ca
            usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
            assert usage.key_cert_sign and usage.digital_signature
            assert cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)


def test_subjects_follow_istios_reference_profile(dev):
    (root,) = certs(cacerts(dev, "cluster1")["root-cert.pem"])
    assert attribute(root.subject, NameOID.COMMON_NAME) == "Root CA"
    assert attribute(root.subject, NameOID.ORGANIZATION_NAME) == "sks-istio-mesh"
    for cluster in CLUSTERS:
        (intermediate,) = certs(cacerts(dev, cluster)["ca-cert.pem"])
        assert attribute(intermediate.subject, NameOID.COMMON_NAME) == "Intermediate CA"
        assert attribute(intermediate.subject, NameOID.LOCALITY_NAME) == cluster
        assert attribute(intermediate.subject, NameOID.ORGANIZATION_NAME) == "sks-istio-mesh"
        sans = intermediate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == [ISTIOD_SAN]


def test_keys_are_rsa_4096_by_default(dev):
    for cluster in CLUSTERS:
        files = cacerts(dev, cluster)
        for cert in certs(files["cert-chain.pem"]):
            assert isinstance(cert.public_key(), rsa.RSAPublicKey) and cert.public_key().key_size == 4096


def test_validity_defaults_are_ten_years_for_the_root_and_two_for_intermediates(dev):
    (root,) = certs(cacerts(dev, "cluster1")["root-cert.pem"])
    (intermediate,) = certs(cacerts(dev, "cluster1")["ca-cert.pem"])
    assert root.not_valid_after_utc - root.not_valid_before_utc == datetime.timedelta(hours=87600)
    assert intermediate.not_valid_after_utc - intermediate.not_valid_before_utc == datetime.timedelta(hours=17520)
    signed = dev.named("mesh-ca-cluster1-intermediate-cert").inputs
    assert signed["earlyRenewalHours"] == 720


def test_ca_key_matches_ca_cert(dev):
    for cluster in CLUSTERS:
        files = cacerts(dev, cluster)
        key = serialization.load_pem_private_key(files["ca-key.pem"].encode(), None)
        (cert,) = certs(files["ca-cert.pem"])
        assert key.public_key().public_numbers() == cert.public_key().public_numbers()


def test_cert_chain_is_intermediate_then_root(dev):
    for cluster in CLUSTERS:
        files = cacerts(dev, cluster)
        chain = certs(files["cert-chain.pem"])
        assert [c.fingerprint(hashes.SHA256()) for c in chain] == [
            certs(files["ca-cert.pem"])[0].fingerprint(hashes.SHA256()),
            certs(files["root-cert.pem"])[0].fingerprint(hashes.SHA256()),
        ]


def test_clusters_get_distinct_intermediate_keys(dev):
    keys = {cacerts(dev, c)["ca-key.pem"] for c in CLUSTERS}
    assert len(keys) == len(CLUSTERS)


def test_root_certificate_is_exported_and_equals_every_clusters_root(dev):
    assert dev.outputs["rootCertPem"].value == cacerts(dev, "cluster1")["root-cert.pem"]


def test_every_key_bearing_input_is_a_pulumi_secret(dev):
    for cluster in CLUSTERS:
        wire = dev.named(f"{cluster}-cacerts").wire_inputs
        assert is_wire_secret(wire["stringData"])
        csr = dev.named(f"mesh-ca-{cluster}-intermediate-csr").wire_inputs
        assert is_wire_secret(csr["privateKeyPem"])
        signed = dev.named(f"mesh-ca-{cluster}-intermediate-cert").wire_inputs
        assert is_wire_secret(signed["caPrivateKeyPem"])
    assert is_wire_secret(dev.named("mesh-ca-root-cert").wire_inputs["privateKeyPem"])


def test_ecdsa_p256_is_selectable():
    recording = run_program({**stack_config("dev"), "caKeyAlgorithm": "ECDSA"})
    for key in recording.of_type("tls:index/privateKey:PrivateKey"):
        assert key.inputs["algorithm"] == "ECDSA" and key.inputs["ecdsaCurve"] == "P256"
    files = cacerts(recording, "cluster2")
    (intermediate,) = certs(files["ca-cert.pem"])
    assert isinstance(intermediate.public_key(), ec.EllipticCurvePublicKey)
    intermediate.verify_directly_issued_by(certs(files["root-cert.pem"])[0])


@pytest.fixture(scope="module")
def own_root() -> tuple[str, str]:
    """An organisation's root CA, made outside the program."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Example Corp Root CA")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode(), pem_private(key)


def test_bring_your_own_root_replaces_the_generated_root(own_root):
    cert_pem, key_pem = own_root
    recording = run_program({**stack_config("dev"), "rootCaCertPem": cert_pem, "rootCaKeyPem": key_pem},
                            secret_keys=("rootCaKeyPem",))
    assert recording.of_type("tls:index/selfSignedCert:SelfSignedCert") == []
    assert not any(r.name == "mesh-ca-root-key" for r in recording.resources)
    (root,) = certs(cert_pem)
    for cluster in CLUSTERS:
        files = cacerts(recording, cluster)
        assert files["root-cert.pem"] == cert_pem
        certs(files["ca-cert.pem"])[0].verify_directly_issued_by(root)
        signed = recording.named(f"mesh-ca-{cluster}-intermediate-cert").wire_inputs
        assert is_wire_secret(signed["caPrivateKeyPem"])


def test_protect_option_protects_the_root_ca_key():
    recording = run_program({**stack_config("dev"), "protect": True})
    assert recording.named("mesh-ca-root-key").protect
    assert recording.named("mesh-ca-root-cert").protect
    assert not recording.named("mesh-ca-cluster1-intermediate-key").protect


# --- Day 2: the root only ever changes on purpose ------------------------------------------------
# istiod 1.30 reloads a new intermediate but not a new root ("Multi root is disabled"), so a root
# replaced as a side effect keeps every istiod on the old chain until a restart breaks the mesh.
ROOT_RESOURCES = ("mesh-ca-root-key", "mesh-ca-root-cert")


def intermediate_resource(name: str) -> bool:
    return name.startswith("mesh-ca-") and "-intermediate-" in name


@pytest.mark.parametrize("key, value", [
    ("caOrganization", "Example Corp"), ("caKeyAlgorithm", "ECDSA"), ("rootCaValidityHours", 99999),
])
def test_root_ca_settings_never_replace_the_running_root_and_say_so(dev, key, value):
    changed = run_program({**stack_config("dev"), key: value}, previous=dev)
    steps = changed.steps()
    assert [steps[name] for name in ROOT_RESOURCES] == [engine.SAME, engine.SAME]
    assert changed.outputs["rootCertPem"].value == dev.outputs["rootCertPem"].value
    # Re-issuing intermediates under the same root is fine: istiod reloads them.
    for name, step in changed.changed().items():
        assert intermediate_resource(name) or (name.endswith("-cacerts") and step == engine.UPDATE) \
            or name.endswith("-exodemo-smoke-test"), (name, step)
    assert any(key in warning and "rootCaRotation" in warning for warning in changed.warnings), changed.warnings


def bigger_nodepools() -> dict:
    clusters = stack_config("dev")["clusters"]
    return {"clusters": [{**c, "nodepool": {**c["nodepool"], "size": 3}} for c in clusters]}


@pytest.mark.parametrize("config", [
    {"helmTimeoutSeconds": 1200}, {"intermediateCaEarlyRenewalHours": 240}, bigger_nodepools(),
], ids=["helmTimeoutSeconds", "intermediateCaEarlyRenewalHours", "nodepool size"])
def test_an_unrelated_change_replaces_nothing(dev, config):
    changed = run_program({**stack_config("dev"), **config}, previous=dev)
    assert [n for n, step in changed.changed().items() if step in (engine.REPLACE, engine.DELETE)] == []
    assert changed.warnings == []


def test_a_new_own_root_without_a_rotation_stops_the_deploy(dev, own_root):
    cert_pem, key_pem = own_root
    byo = {**stack_config("dev"), "rootCaCertPem": cert_pem, "rootCaKeyPem": key_pem}
    # Switching to an own root is a root change like any other: it needs the staged rotation.
    error, _ = run_failing_program(byo, secret_keys=("rootCaKeyPem",), previous=dev)
    assert isinstance(error, pulumi.RunError), type(error)  # printed as its message, without a traceback
    assert "rootCaCertPem" in str(error) and "rootCaRotation" in str(error)


def own_rotation(phase: str, cert_pem: str, key_pem: str, *switched: str) -> dict:
    return {"rootCaRotation": {"toGeneration": 2, "phase": phase, "switchedClusters": list(switched),
                               "rootCaCertPem": cert_pem, "rootCaKeyPem": key_pem}}


def test_a_generated_root_rotates_to_an_own_root_in_stages_and_the_end_changes_nothing(dev, own_root):
    cert_pem, key_pem = own_root
    (own,) = certs(cert_pem)
    (old,) = certs(cacerts(dev, "cluster1")["root-cert.pem"])
    previous = dev
    for phase, switched in (("trust", ()), ("switch", ("cluster2",)), ("switch", CLUSTERS), ("finalize", ())):
        previous = run_program({**stack_config("dev"), **own_rotation(phase, cert_pem, key_pem, *switched)},
                               secret_keys=("rootCaRotation",), previous=previous)
        for cluster in CLUSTERS:
            files = cacerts(previous, cluster)
            trusted = [own] if phase == "finalize" else [old, own]
            assert [c.fingerprint(hashes.SHA256()) for c in certs(files["root-cert.pem"])] == \
                [c.fingerprint(hashes.SHA256()) for c in trusted]
            issuer = own if phase == "finalize" or cluster in switched else old
            certs(files["ca-cert.pem"])[0].verify_directly_issued_by(issuer)
        for name in (f"mesh-ca-g2-{c}-intermediate-cert" for c in CLUSTERS if phase == "finalize" or c in switched):
            # The brought key is a secret on the wire, like the top-level rootCaKeyPem.
            assert is_wire_secret(previous.named(name).wire_inputs["caPrivateKeyPem"])
    assert "mesh-ca-root-key" not in {r.name for r in previous.resources}
    # The rotation ends: the new root's PEMs move to the top-level keys, and nothing changes.
    ended = run_program({**stack_config("dev"), "rootCaGeneration": 2, "rootCaCertPem": cert_pem,
                         "rootCaKeyPem": key_pem}, secret_keys=("rootCaKeyPem",), previous=previous)
    assert ended.changed() == {}
