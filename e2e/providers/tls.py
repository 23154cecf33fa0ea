"""`pulumi-resource-tls` stand-in: real keys and certificates made with `cryptography`, the way
hashicorp/terraform-provider-tls v4.2.1 makes them (bridged by pulumi-tls 5.6.2: the SDK has
`max_path_length`, added in v4.2.0; v4.2.1 fixed its default).

Replace rules, from `internal/provider/*.go` at v4.2.1 (plan modifiers of each attribute):
`RequiresReplace()` -> REPLACE; `requireReplaceIfStateContainsPEMString()` (the PEM inputs) ->
REPLACE, since the state always holds a PEM here; no modifier (only `early_renewal_hours`) ->
UPDATE (the framework's Update copies the plan into the state). `ready_for_renewal` forces a
replacement once now >= validity_end_time - early_renewal_hours (`modifyPlanIfCertificateReady
ForRenewal` in common_cert.go), and Read sets it true from then on
(`modifyStateIfCertificateReadyForRenewal`).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import secrets
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from e2e.providers.base import UNKNOWN, Handler, Rule, Schema, StandInProvider, serve

VERSION = "5.6.2"  # pulumi_tls's pulumi-plugin.json: the plugin version the SDK asks the engine for

R, U = Rule.REPLACE, Rule.UPDATE
CURVES = {"P224": ec.SECP224R1, "P256": ec.SECP256R1, "P384": ec.SECP384R1, "P521": ec.SECP521R1}
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

# common_cert.go `keyUsages` / `extendedKeyUsages`: allowed_uses names -> x509 usages.
KEY_USAGES = {
    "digital_signature": "digital_signature", "content_commitment": "content_commitment",
    "key_encipherment": "key_encipherment", "data_encipherment": "data_encipherment",
    "key_agreement": "key_agreement", "cert_signing": "key_cert_sign", "crl_signing": "crl_sign",
    "encipher_only": "encipher_only", "decipher_only": "decipher_only",
}
EXTENDED_KEY_USAGES = {
    "any_extended": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE, "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH, "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "ipsec_end_system": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.5"),
    "ipsec_tunnel": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.6"),
    "ipsec_user": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.7"),
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING, "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "microsoft_server_gated_crypto": x509.ObjectIdentifier("1.3.6.1.4.1.311.10.3.3"),
    "netscape_server_gated_crypto": x509.ObjectIdentifier("2.16.840.1.113730.4.1"),
    "microsoft_commercial_code_signing": x509.ObjectIdentifier("1.3.6.1.4.1.311.2.1.22"),
    "microsoft_kernel_code_signing": x509.ObjectIdentifier("1.3.6.1.4.1.311.61.1.1"),
}
# pkix.Name.ToRDNSequence order (Go), which the real provider's subjects follow.
SUBJECT_FIELDS = (
    ("country", NameOID.COUNTRY_NAME), ("province", NameOID.STATE_OR_PROVINCE_NAME),
    ("locality", NameOID.LOCALITY_NAME), ("streetAddresses", NameOID.STREET_ADDRESS),
    ("postalCode", NameOID.POSTAL_CODE), ("organization", NameOID.ORGANIZATION_NAME),
    ("organizationalUnit", NameOID.ORGANIZATIONAL_UNIT_NAME), ("commonName", NameOID.COMMON_NAME),
    ("serialNumber", NameOID.SERIAL_NUMBER), ("emailAddress", NameOID.EMAIL_ADDRESS),
)
# Every field of the `subject` block is RequiresReplace, and so is the block (resource_*_cert.go
# and resource_cert_request.go, "subject": ListNestedBlock with listplanmodifier.RequiresReplace()).

# The same five attributes, with the same plan modifiers, in resource_cert_request.go and
# resource_self_signed_cert.go.
KEY_AND_NAMES_INPUTS = {
    "privateKeyPem": R,  # "private_key_pem": requireReplaceIfStateContainsPEMString()
    "subject": R,  # "subject": listplanmodifier.RequiresReplace() (and each field)
    "dnsNames": R,  # "dns_names": listplanmodifier.RequiresReplace()
    "ipAddresses": R,  # "ip_addresses": listplanmodifier.RequiresReplace()
    "uris": R,  # "uris": listplanmodifier.RequiresReplace()
}
# resource_self_signed_cert.go and resource_locally_signed_cert.go alike.
CERT_INPUTS = {
    "validityPeriodHours": R,  # "validity_period_hours": int64planmodifier.RequiresReplace()
    "allowedUses": R,  # "allowed_uses": listplanmodifier.RequiresReplace()
    "earlyRenewalHours": U,  # "early_renewal_hours": no plan modifier (Default 0)
    "isCaCertificate": R,  # "is_ca_certificate": boolplanmodifier.RequiresReplace()
    "maxPathLength": R,  # "max_path_length": UseStateForUnknown(), RequiresReplace()
    "setSubjectKeyId": R,  # "set_subject_key_id": boolplanmodifier.RequiresReplace()
}
CERT_DEFAULTS = {"earlyRenewalHours": 0, "isCaCertificate": False, "setSubjectKeyId": False}
CERT_COMPUTED = frozenset({"certPem", "readyForRenewal", "validityStartTime", "validityEndTime"})


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def rfc3339(moment: datetime.datetime) -> str:
    # Go's time.MarshalText (RFC 3339 with nanoseconds, trailing zeros dropped), in UTC.
    text = moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return f"{text}Z"


def parse_rfc3339(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def hash_for_state(value: bytes) -> str:
    """common.go hashForState: the id of keys and requests."""
    return hashlib.sha1(value.strip(), usedforsecurity=False).hexdigest()


def algorithm_of(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return "ECDSA"
    return "ED25519"


def load_private_key(pem: str) -> PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return key


def _pem(key: PrivateKey, private_format: serialization.PrivateFormat) -> str:
    return key.private_bytes(serialization.Encoding.PEM, private_format, serialization.NoEncryption()).decode()


def _openssh_public(key: PrivateKey) -> bytes | None:
    try:
        return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    except ValueError:
        return None  # P-224 has no OpenSSH encoding: the real provider leaves these empty


def key_outputs(key: PrivateKey) -> dict[str, str]:
    """resource_private_key.go Create and common_key.go setPublicKeyAttributes."""
    if isinstance(key, rsa.RSAPrivateKey):
        private_pem = _pem(key, serialization.PrivateFormat.TraditionalOpenSSL)  # "RSA PRIVATE KEY" (PKCS#1)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        private_pem = _pem(key, serialization.PrivateFormat.TraditionalOpenSSL)  # "EC PRIVATE KEY" (SEC 1)
    else:
        private_pem = _pem(key, serialization.PrivateFormat.PKCS8)
    openssh = _openssh_public(key)
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    outputs = {
        "privateKeyPem": private_pem,
        "privateKeyPemPkcs8": _pem(key, serialization.PrivateFormat.PKCS8),
        "privateKeyOpenssh": _pem(key, serialization.PrivateFormat.OpenSSH) if openssh else "",
        "publicKeyPem": key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
        "publicKeyOpenssh": f"{openssh.decode()}\n" if openssh else "",
        "publicKeyFingerprintMd5": "",
        "publicKeyFingerprintSha256": "",
        "id": hash_for_state(public_der),
    }
    if openssh:
        blob = base64.b64decode(openssh.split()[1])
        md5 = hashlib.md5(blob, usedforsecurity=False).hexdigest()
        outputs["publicKeyFingerprintMd5"] = ":".join(md5[i:i + 2] for i in range(0, len(md5), 2))
        sha256 = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
        outputs["publicKeyFingerprintSha256"] = f"SHA256:{sha256}"
    return outputs


def subject_name(subject: dict[str, Any] | None) -> x509.Name:
    attributes: list[x509.NameAttribute] = []
    for key, oid in SUBJECT_FIELDS:
        value = (subject or {}).get(key)
        for item in value if isinstance(value, list) else [value] if value else []:
            attributes.append(x509.NameAttribute(oid, item))
    return x509.Name(attributes)


def alternative_names(inputs: dict[str, Any]) -> list[x509.GeneralName]:
    return [
        *(x509.DNSName(name) for name in inputs.get("dnsNames") or []),
        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in inputs.get("ipAddresses") or []),
        *(x509.UniformResourceIdentifier(uri) for uri in inputs.get("uris") or []),
    ]


def _signature_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    # Go's x509 picks the hash from the signing key: SHA-384/512 for P-384/P-521, none for Ed25519.
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384() if key.curve.key_size == 384 else hashes.SHA512()
    return hashes.SHA256()


def ready_for_renewal(state: dict[str, Any], renewal_hours: Any, at: datetime.datetime) -> bool:
    """common_cert.go: ready once validity_end_time - early_renewal_hours has come."""
    end = state.get("validityEndTime")
    if not end or end is UNKNOWN or renewal_hours is UNKNOWN:
        return False
    return parse_rfc3339(end) - datetime.timedelta(hours=int(renewal_hours or 0)) <= at


def create_certificate(
    inputs: dict[str, Any], subject: x509.Name, sans: list[x509.GeneralName], public_key: Any,
    issuer: x509.Certificate | None, signing_key: PrivateKey,
) -> dict[str, Any]:
    """common_cert.go createCertificate: validity from the clock, a random 128-bit serial,
    allowed_uses, CA basic constraints, subject/authority key ids."""
    not_before = now()
    not_after = not_before + datetime.timedelta(hours=int(inputs["validityPeriodHours"]))
    uses = inputs.get("allowedUses") or []
    is_ca = bool(inputs.get("isCaCertificate"))
    max_path = inputs.get("maxPathLength")
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(public_key)
        .serial_number(secrets.randbits(128) or 1)  # rand.Int(rand.Reader, 2^128)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # BasicConstraintsValid: true in both resources' templates; Go omits a zero MaxPathLen.
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=max_path if is_ca and max_path else None),
                       critical=True)
    )
    if any(use in KEY_USAGES for use in uses):
        flags = dict.fromkeys(KEY_USAGES.values(), False)
        flags.update({KEY_USAGES[use]: True for use in uses if use in KEY_USAGES})
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    extended = [EXTENDED_KEY_USAGES[use] for use in uses if use in EXTENDED_KEY_USAGES]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    if sans:
        # Go marks the SAN extension critical when the subject is empty (RFC 5280 4.2.1.6).
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=not subject.rdns)
    subject_key_id = None
    if is_ca or inputs.get("setSubjectKeyId"):
        if is_ca and not subject.rdns:
            raise ValueError("Invalid Certificate Subject: must contain at least one Distinguished Name "
                             "when creating Certificate Authority (CA)")
        subject_key_id = x509.SubjectKeyIdentifier.from_public_key(public_key)
        builder = builder.add_extension(subject_key_id, critical=False)
    authority_key_id = None
    if issuer is not None:
        # Go's x509.CreateCertificate copies the parent's SubjectKeyId as AuthorityKeyId.
        try:
            authority_key_id = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except x509.ExtensionNotFound:
            authority_key_id = None
    elif inputs.get("setAuthorityKeyId"):
        if subject_key_id is None:
            raise ValueError("Invalid Certificate Authority: could not determine Authority Key Identifier")
        authority_key_id = subject_key_id.digest
    if authority_key_id:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier(authority_key_id, None, None), critical=False)
    cert = builder.sign(signing_key, _signature_hash(signing_key))  # type: ignore[arg-type]
    return {
        "id": str(cert.serial_number),
        "certPem": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "validityStartTime": rfc3339(not_before),
        "validityEndTime": rfc3339(not_after),
        "readyForRenewal": False,
    }


class _CertificateHandler(Handler):
    def read(self, resource_id: str, state: dict[str, Any]) -> dict[str, Any] | None:
        if ready_for_renewal(state, state.get("earlyRenewalHours"), now()):
            return {**state, "readyForRenewal": True}
        return state

    def replace_reasons(self, olds: dict[str, Any], news: dict[str, Any]) -> dict[str, Any]:
        if ready_for_renewal(olds, news.get("earlyRenewalHours", olds.get("earlyRenewalHours")), now()):
            return {"readyForRenewal": UNKNOWN}
        return {}


def _created(resource_id_and_outputs: dict[str, Any], inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    outputs = dict(resource_id_and_outputs)
    resource_id = outputs.pop("id")
    return resource_id, {**inputs, **outputs}


class PrivateKeyHandler(Handler):
    schema = Schema(
        token="tls:index/privateKey:PrivateKey",
        inputs={
            "algorithm": R,  # resource_private_key.go "algorithm": stringplanmodifier.RequiresReplace()
            "rsaBits": R,  # "rsa_bits": int64planmodifier.RequiresReplace(), Default 2048
            "ecdsaCurve": R,  # "ecdsa_curve": stringplanmodifier.RequiresReplace(), Default P224
        },
        defaults={"rsaBits": 2048, "ecdsaCurve": "P224"},
        required=frozenset({"algorithm"}),
        choices={"algorithm": ("RSA", "ECDSA", "ED25519"), "ecdsaCurve": tuple(CURVES)},
        computed=frozenset({"privateKeyPem", "privateKeyPemPkcs8", "privateKeyOpenssh", "publicKeyPem",
                            "publicKeyOpenssh", "publicKeyFingerprintMd5", "publicKeyFingerprintSha256"}),
        secret_outputs=frozenset({"privateKeyOpenssh", "privateKeyPem", "privateKeyPemPkcs8"}),
    )

    def create(self, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        key: PrivateKey
        if inputs["algorithm"] == "RSA":
            key = rsa.generate_private_key(public_exponent=65537, key_size=int(inputs["rsaBits"]))
        elif inputs["algorithm"] == "ECDSA":
            key = ec.generate_private_key(CURVES[inputs["ecdsaCurve"]]())
        else:
            key = ed25519.Ed25519PrivateKey.generate()
        return _created(key_outputs(key), inputs)


class CertRequestHandler(Handler):
    schema = Schema(
        token="tls:index/certRequest:CertRequest",
        inputs=KEY_AND_NAMES_INPUTS,  # resource_cert_request.go
        required=frozenset({"privateKeyPem"}),
        computed=frozenset({"certRequestPem", "keyAlgorithm"}),
        secret_outputs=frozenset({"privateKeyPem"}),
    )

    def create(self, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        key = load_private_key(inputs["privateKeyPem"])
        builder = x509.CertificateSigningRequestBuilder().subject_name(subject_name(inputs.get("subject")))
        sans = alternative_names(inputs)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        request = builder.sign(key, _signature_hash(key))  # type: ignore[arg-type]
        pem = request.public_bytes(serialization.Encoding.PEM)
        return hash_for_state(pem), {**inputs, "certRequestPem": pem.decode(), "keyAlgorithm": algorithm_of(key)}


class SelfSignedCertHandler(_CertificateHandler):
    schema = Schema(
        token="tls:index/selfSignedCert:SelfSignedCert",
        inputs={  # resource_self_signed_cert.go
            **KEY_AND_NAMES_INPUTS,
            "setAuthorityKeyId": R,  # "set_authority_key_id": boolplanmodifier.RequiresReplace()
            **CERT_INPUTS,
        },
        defaults={**CERT_DEFAULTS, "setAuthorityKeyId": False},
        required=frozenset({"privateKeyPem", "validityPeriodHours"}),
        computed=CERT_COMPUTED | {"keyAlgorithm"},
        secret_outputs=frozenset({"privateKeyPem"}),
    )

    def create(self, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        key = load_private_key(inputs["privateKeyPem"])
        outputs = create_certificate(inputs, subject_name(inputs.get("subject")), alternative_names(inputs),
                                     key.public_key(), None, key)
        return _created({**outputs, "keyAlgorithm": algorithm_of(key)}, inputs)


class LocallySignedCertHandler(_CertificateHandler):
    schema = Schema(
        token="tls:index/locallySignedCert:LocallySignedCert",
        inputs={
            "certRequestPem": R,  # resource_locally_signed_cert.go: requireReplaceIfStateContainsPEMString()
            "caCertPem": R,  # "ca_cert_pem": requireReplaceIfStateContainsPEMString()
            "caPrivateKeyPem": R,  # "ca_private_key_pem": requireReplaceIfStateContainsPEMString()
            **CERT_INPUTS,
        },
        defaults=CERT_DEFAULTS,
        required=frozenset({"certRequestPem", "caCertPem", "caPrivateKeyPem", "validityPeriodHours"}),
        computed=CERT_COMPUTED | {"caKeyAlgorithm"},
        secret_outputs=frozenset({"caPrivateKeyPem"}),
    )

    def create(self, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        request = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
        if not request.is_signature_valid:
            raise ValueError("the certificate request's signature does not verify")
        ca_cert = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
        ca_key = load_private_key(inputs["caPrivateKeyPem"])
        try:
            sans = list(request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            sans = []
        # The template takes Subject, DNSNames, IPAddresses and URIs from the request.
        outputs = create_certificate(inputs, request.subject, sans, request.public_key(), ca_cert, ca_key)
        return _created({**outputs, "caKeyAlgorithm": algorithm_of(ca_key)}, inputs)


def provider() -> StandInProvider:
    return StandInProvider([PrivateKeyHandler(), CertRequestHandler(), SelfSignedCertHandler(),
                            LocallySignedCertHandler()])


if __name__ == "__main__":
    serve(VERSION, provider)
