"""Istio plug-in CA hierarchy: one root, one intermediate per cluster (pulumi-tls).

Mirrors Istio's tools/certs Makefile.selfsigned.mk profile (reference/istio-multicluster.md §7).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_tls as tls

from components.config import PkiSettings
from mesh_constants import PKI_TYPE, PROJECT

ISTIOD_SAN = "istiod.istio-system.svc"
CA_USES = ["cert_signing", "crl_signing", "digital_signature", "content_commitment", "key_encipherment"]
# istiod reloads a new intermediate but refuses a new root until it restarts ("Multi root is
# disabled"), so nothing but rootCaGeneration may replace the root. These are the root's
# replace-on-change inputs (terraform-provider-tls), pinned once created.
ROOT_KEY_PINNED = ["algorithm", "rsaBits", "ecdsaCurve"]
ROOT_CERT_PINNED = ["privateKeyPem", "subject", "validityPeriodHours", "allowedUses", "isCaCertificate",
                    "setSubjectKeyId"]
# An intermediate stays signed by the root that signed it, even a re-issued one.
INTERMEDIATE_PINNED = ["caCertPem", "caPrivateKeyPem"]
ROTATE_HINT = "raise rootCaGeneration to rotate the root (README: Certificates, rotating the root)"


@dataclass(frozen=True)
class IntermediateCa:
    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]  # always a Pulumi secret
    chain_pem: pulumi.Output[str]  # intermediate first, then root: Istio's cert-chain.pem
    root_cert_pem: pulumi.Output[str]  # the root that really signed it: Istio's root-cert.pem


@dataclass(frozen=True)
class MeshPkiArgs:
    settings: PkiSettings
    cluster_names: tuple[str, ...]
    # Bring-your-own root: its key as a secret Output (from config); None to generate a root.
    root_key_pem: pulumi.Output[str] | None = None
    protect_root: bool = False


def live_root(signed_by: str, configured: str) -> str:
    """The root an intermediate was signed with; a different configured root is a root change
    made without the explicit step, which would split the mesh's trust."""
    if signed_by != configured:
        raise pulumi.RunError(
            f"{PROJECT}:rootCaCertPem: the configured root is not the root that signed the running "
            f"intermediates; a new root needs every istiod restarted, so go back to the previous root or {ROTATE_HINT}"
        )
    return signed_by


def root_drift(organization: str, validity_hours: int, algorithm: str, settings: PkiSettings) -> list[str]:
    """Root CA settings that differ from the running root (which is kept)."""
    return [
        f"{key} is {wanted!r} but the running root has {running!r}"
        for key, wanted, running in (
            ("caOrganization", settings.organization, organization),
            ("rootCaValidityHours", settings.root_validity_hours, validity_hours),
            ("caKeyAlgorithm", settings.key_algorithm, algorithm),
        )
        if wanted != running
    ]


def _join_pems(*pems: str | None) -> str:
    return "".join(pem if pem.endswith("\n") else pem + "\n" for pem in pems if pem)


class MeshPki(pulumi.ComponentResource):
    root_cert_pem: pulumi.Output[str]
    intermediates: dict[str, IntermediateCa]

    def __init__(self, name: str, args: MeshPkiArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(PKI_TYPE, name, None, opts)
        self._settings = args.settings
        settings = args.settings
        # A new generation is a new set of resources: created from the current settings, while
        # the previous root and intermediates are deleted.
        prefix = name if settings.root_generation == 1 else f"{name}-g{settings.root_generation}"

        if settings.bring_your_own_root:
            if args.root_key_pem is None:
                raise ValueError("a bring-your-own root certificate needs its key (rootCaKeyPem)")
            root_key_pem = pulumi.Output.secret(args.root_key_pem)
            root_cert_pem: pulumi.Output[str] = pulumi.Output.from_input(settings.root_cert_pem or "")
        else:
            root_key = self._private_key(
                f"{prefix}-root-key",
                pulumi.ResourceOptions(parent=self, protect=args.protect_root, ignore_changes=ROOT_KEY_PINNED),
            )
            root_key_pem = pulumi.Output.secret(root_key.private_key_pem)
            root_cert = tls.SelfSignedCert(
                f"{prefix}-root-cert",
                private_key_pem=root_key_pem,
                subject=tls.SelfSignedCertSubjectArgs(
                    organization=settings.organization, common_name="Root CA"
                ),
                is_ca_certificate=True,
                set_subject_key_id=True,
                allowed_uses=CA_USES,
                validity_period_hours=settings.root_validity_hours,
                opts=pulumi.ResourceOptions(parent=self, protect=args.protect_root, ignore_changes=ROOT_CERT_PINNED),
            )
            root_cert_pem = root_cert.cert_pem
            pulumi.Output.all(
                root_cert.subject.apply(lambda subject: subject.organization if subject else None),
                root_cert.validity_period_hours,
                root_key.algorithm,
            ).apply(lambda live: self._warn_about_root_drift(*live))

        self.intermediates = {
            cluster: self._intermediate(prefix, cluster, root_cert_pem, root_key_pem)
            for cluster in args.cluster_names
        }
        self.root_cert_pem = self.intermediates[args.cluster_names[0]].root_cert_pem
        self.register_outputs({
            "root_cert_pem": self.root_cert_pem,
            "intermediate_cert_pems": {c: ca.cert_pem for c, ca in self.intermediates.items()},
        })

    def _warn_about_root_drift(self, organization: str, validity_hours: int, algorithm: str) -> None:
        drift = root_drift(organization, validity_hours, algorithm, self._settings)
        if drift:
            pulumi.log.warn(
                "the root CA is kept unchanged: " + "; ".join(drift) + f". To use the new settings, {ROTATE_HINT}.",
                resource=self,
            )

    def _private_key(self, resource_name: str, opts: pulumi.ResourceOptions) -> tls.PrivateKey:
        if self._settings.key_algorithm == "ECDSA":
            return tls.PrivateKey(resource_name, algorithm="ECDSA", ecdsa_curve="P256", opts=opts)
        return tls.PrivateKey(resource_name, algorithm="RSA", rsa_bits=4096, opts=opts)

    def _intermediate(
        self, prefix: str, cluster: str, root_cert_pem: pulumi.Output[str], root_key_pem: pulumi.Output[str]
    ) -> IntermediateCa:
        child = pulumi.ResourceOptions(parent=self)
        # Explicitly secret wherever it flows.
        key_pem = pulumi.Output.secret(self._private_key(f"{prefix}-{cluster}-intermediate-key", child).private_key_pem)
        request = tls.CertRequest(
            f"{prefix}-{cluster}-intermediate-csr",
            private_key_pem=key_pem,
            subject=tls.CertRequestSubjectArgs(
                organization=self._settings.organization, common_name="Intermediate CA", locality=cluster
            ),
            dns_names=[ISTIOD_SAN],
            opts=child,
        )
        cert = tls.LocallySignedCert(
            f"{prefix}-{cluster}-intermediate-cert",
            cert_request_pem=request.cert_request_pem,
            ca_cert_pem=root_cert_pem,
            ca_private_key_pem=root_key_pem,
            is_ca_certificate=True,
            set_subject_key_id=True,
            allowed_uses=CA_USES,
            validity_period_hours=self._settings.intermediate_validity_hours,
            early_renewal_hours=self._settings.intermediate_early_renewal_hours,
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=INTERMEDIATE_PINNED),
        )
        signing_root = pulumi.Output.all(cert.ca_cert_pem, root_cert_pem).apply(lambda pems: live_root(*pems))
        return IntermediateCa(
            cert_pem=cert.cert_pem,
            key_pem=key_pem,
            chain_pem=pulumi.Output.all(cert.cert_pem, signing_root).apply(lambda pems: _join_pems(*pems)),
            root_cert_pem=signing_root,
        )
