"""Realistic mocks for the program's providers.

Clusters get SKS-shaped ids, endpoints and kubeconfigs; pulumi-tls resources return real keys and
certificates built with `cryptography` from the inputs the program passes, so tests can verify
the CA chain the way istiod and openssl would.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import uuid
from functools import cache
from typing import Any

import pulumi
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pulumi.runtime import rpc

FIXED_NOW = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
NAMESPACE = uuid.UUID("6f1d9a8e-0000-4000-8000-5c5e1a7d0000")


def unwrap(value: Any) -> Any:
    """Strip Pulumi's secret envelopes from deserialized inputs."""
    if rpc.is_rpc_secret(value):
        return unwrap(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def stable_uuid(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


@cache
def private_key(algorithm: str, size: str, seed: str) -> Any:
    """A real key; cached so each test run does not pay for RSA-4096 generation again."""
    del seed  # one key per resource name, reused across program runs in one process
    if algorithm == "ECDSA":
        curve = {"P224": ec.SECP224R1(), "P256": ec.SECP256R1(), "P384": ec.SECP384R1(),
                 "P521": ec.SECP521R1()}[size]
        return ec.generate_private_key(curve)
    return rsa.generate_private_key(public_exponent=65537, key_size=int(size))


@cache
def load_private_key(pem: str) -> Any:
    """Parsing validates an RSA key (~0.2 s for 4096 bits): once per key per process."""
    return serialization.load_pem_private_key(pem.encode(), None)


def pem_private(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def pem_public(key: Any) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def x509_name(subject: dict[str, Any] | None) -> x509.Name:
    subject = subject or {}
    fields = [("organization", NameOID.ORGANIZATION_NAME), ("organizationalUnit", NameOID.ORGANIZATIONAL_UNIT_NAME),
              ("locality", NameOID.LOCALITY_NAME), ("commonName", NameOID.COMMON_NAME)]
    return x509.Name([x509.NameAttribute(oid, subject[key]) for key, oid in fields if subject.get(key)])


KEY_USAGES = {
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
    "cert_signing", "crl_signing", "encipher_only", "decipher_only",
}
EXTENDED_USAGES = {"server_auth": ExtendedKeyUsageOID.SERVER_AUTH, "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH}


def build_certificate(inputs: dict[str, Any], subject: x509.Name, public_key: Any, issuer: x509.Name,
                      signing_key: Any, issuer_public_key: Any, dns_names: list[str]) -> str:
    """Issue a certificate the way terraform-provider-tls does from the same inputs."""
    uses = inputs.get("allowedUses", [])
    unknown = set(uses) - KEY_USAGES - set(EXTENDED_USAGES)
    assert not unknown, f"allowed_uses not known to pulumi-tls: {unknown}"
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(int(hashlib.sha256(subject.rfc4514_string().encode()).hexdigest()[:30], 16))
        .not_valid_before(FIXED_NOW)
        .not_valid_after(FIXED_NOW + datetime.timedelta(hours=int(inputs["validityPeriodHours"])))
        .add_extension(x509.BasicConstraints(ca=bool(inputs.get("isCaCertificate")), path_length=None),
                       critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature="digital_signature" in uses, content_commitment="content_commitment" in uses,
            key_encipherment="key_encipherment" in uses, data_encipherment="data_encipherment" in uses,
            key_agreement="key_agreement" in uses, key_cert_sign="cert_signing" in uses,
            crl_sign="crl_signing" in uses, encipher_only=False, decipher_only=False,
        ), critical=True)
    )
    extended = [EXTENDED_USAGES[u] for u in uses if u in EXTENDED_USAGES]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    if dns_names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
                                        critical=False)
    # Like the Go provider: a CA always gets a subject key id; issued certs carry the parent's.
    if inputs.get("setSubjectKeyId") or inputs.get("isCaCertificate"):
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public_key), critical=False
    )
    algorithm = hashes.SHA256()
    return builder.sign(signing_key, algorithm).public_bytes(serialization.Encoding.PEM).decode()


@cache
def cluster_ca(cluster_id: str) -> tuple[str, Any]:
    key = private_key("ECDSA", "P256", f"cluster-ca-{cluster_id}")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster_id} control plane CA")])
    cert = build_certificate({"validityPeriodHours": 87600, "isCaCertificate": True,
                              "allowedUses": ["cert_signing", "digital_signature"]},
                             name, key.public_key(), name, key, key.public_key(), [])
    return cert, key


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def sks_endpoint(cluster_id: str, zone: str) -> str:
    return f"https://{cluster_id}.sks-{zone}.exo.io"


def sks_kubeconfig(cluster_id: str, zone: str, user: str, groups: list[str], ttl_seconds: float) -> str:
    """The shape SKS returns: one cluster, one client-certificate user (a new certificate per TTL)."""
    ca_pem, _ = cluster_ca(cluster_id)
    client_key = private_key("ECDSA", "P256", f"kubeconfig-{cluster_id}-{user}")
    return yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sks-cluster", "cluster": {
            "certificate-authority-data": b64(ca_pem), "server": sks_endpoint(cluster_id, zone)}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(f"certificate of {user} in {','.join(groups)} for {ttl_seconds:.0f}s"),
            "client-key-data": b64(pem_private(client_key))}}],
        "contexts": [{"name": "sks-cluster", "context": {"cluster": "sks-cluster", "user": user}}],
        "current-context": "sks-cluster",
    })


def reader_token(cluster_name: str, namespace: str, account: str) -> str:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "RS256", "kid": cluster_name}).encode()).decode().rstrip("=")
    payload = base64.urlsafe_b64encode(json.dumps({
        "iss": "kubernetes/serviceaccount", "sub": f"system:serviceaccount:{namespace}:{account}",
        "cluster": cluster_name}).encode()).decode().rstrip("=")
    return f"{header}.{payload}.signature-of-{cluster_name}"


class MeshMocks(pulumi.runtime.Mocks):
    """Outputs shaped like the real providers'; state kept per program run."""

    def __init__(self) -> None:
        self.clusters_by_provider: dict[str, dict[str, str]] = {}
        self.cluster_zone: dict[str, str] = {}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token == "exoscale:index/getZones:getZones":
            return {"id": "zones", "zones": ["ch-gva-2", "de-fra-1", "at-vie-2"]}, None
        return {}, None

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        inputs = unwrap(args.inputs)
        handler = getattr(self, "_" + args.typ.replace(":", "_").replace("/", "_").replace(".", "_"), None)
        # The harness passes the id the engine keeps (an update) or a fresh one (a replacement).
        resource_id = args.resource_id or stable_uuid(args.typ, args.name)
        outputs = dict(inputs)
        if handler is not None:
            outputs.update(handler(args, inputs, resource_id))
        return resource_id, outputs

    # Exoscale -----------------------------------------------------------------------------
    def _exoscale_index_sksCluster_SksCluster(self, args, inputs, resource_id):
        self.cluster_zone[resource_id] = inputs["zone"]
        ca_pem, _ = cluster_ca(resource_id)
        return {"endpoint": sks_endpoint(resource_id, inputs["zone"]), "state": "running",
                "version": inputs.get("version") or "1.34.3", "controlPlaneCa": ca_pem,
                "createdAt": FIXED_NOW.isoformat(), "nodepools": []}

    def _exoscale_index_sksNodepool_SksNodepool(self, args, inputs, resource_id):
        return {"instancePoolId": stable_uuid("instance-pool", args.name), "state": "running",
                "templateId": stable_uuid("template"), "version": "1.34.3"}

    def _exoscale_index_sksKubeconfig_SksKubeconfig(self, args, inputs, resource_id):
        return {"kubeconfig": sks_kubeconfig(inputs["clusterId"], inputs["zone"], inputs["user"], inputs["groups"],
                                             inputs["ttlSeconds"]),
                "readyForRenewal": False}

    def _exoscale_index_nlb_Nlb(self, args, inputs, resource_id):
        digest = hashlib.sha256(args.name.encode()).digest()
        return {"ipAddress": str(ipaddress.IPv4Address(bytes([194, 182, digest[0], digest[1] | 1]))),
                "state": "running", "services": []}

    # Kubernetes ---------------------------------------------------------------------------
    def _pulumi_providers_kubernetes(self, args, inputs, resource_id):
        document = yaml.safe_load(inputs["kubeconfig"])
        server = document["clusters"][0]["cluster"]["server"]
        self.clusters_by_provider[resource_id] = {
            "name": args.name.removesuffix("-k8s"), "cluster_id": inputs["clusterIdentifier"], "server": server}
        return {}

    def _kubernetes_core_v1_Secret(self, args, inputs, resource_id):
        if inputs.get("type") != "kubernetes.io/service-account-token":
            return {}
        # The token controller fills in the token and the cluster's CA.
        cluster = self.clusters_by_provider[args.provider.rsplit("::", 1)[1]]
        metadata = inputs["metadata"]
        account = metadata["annotations"]["kubernetes.io/service-account.name"]
        ca_pem, _ = cluster_ca(cluster["cluster_id"])
        return {"data": {"token": b64(reader_token(cluster["name"], metadata["namespace"], account)),
                         "ca.crt": b64(ca_pem), "namespace": b64(metadata["namespace"])}}

    def _kubernetes_helm_sh_v3_Release(self, args, inputs, resource_id):
        return {"status": {"name": inputs.get("name"), "namespace": inputs.get("namespace"),
                           "status": "deployed", "version": inputs.get("version"), "revision": 1,
                           "chart": inputs.get("chart")}}

    # TLS ----------------------------------------------------------------------------------
    def _tls_index_privateKey_PrivateKey(self, args, inputs, resource_id):
        algorithm = inputs.get("algorithm", "RSA")
        size = inputs.get("ecdsaCurve", "P224") if algorithm == "ECDSA" else str(int(inputs.get("rsaBits", 2048)))
        key = private_key(algorithm, size, args.name)
        return {"privateKeyPem": pem_private(key), "publicKeyPem": pem_public(key)}

    def _tls_index_selfSignedCert_SelfSignedCert(self, args, inputs, resource_id):
        key = load_private_key(inputs["privateKeyPem"])
        name = x509_name(inputs.get("subject"))
        cert = build_certificate(inputs, name, key.public_key(), name, key, key.public_key(),
                                 inputs.get("dnsNames", []))
        return {"certPem": cert, "readyForRenewal": False}

    def _tls_index_certRequest_CertRequest(self, args, inputs, resource_id):
        key = load_private_key(inputs["privateKeyPem"])
        builder = x509.CertificateSigningRequestBuilder().subject_name(x509_name(inputs.get("subject")))
        if inputs.get("dnsNames"):
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in inputs["dnsNames"]]), critical=False)
        return {"certRequestPem": builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()}

    def _tls_index_locallySignedCert_LocallySignedCert(self, args, inputs, resource_id):
        request = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
        ca_cert = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
        ca_key = load_private_key(inputs["caPrivateKeyPem"])
        try:
            sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns_names = sans.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            dns_names = []
        cert = build_certificate(inputs, request.subject, request.public_key(), ca_cert.subject, ca_key,
                                 ca_cert.public_key(), dns_names)
        return {"certPem": cert, "readyForRenewal": False}
