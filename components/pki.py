"""Istio plug-in CA hierarchy: one root, one intermediate per cluster (pulumi-tls).

Mirrors Istio's tools/certs Makefile.selfsigned.mk profile (reference/istio-multicluster.md §7).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_tls as tls

from components.config import PkiSettings
from mesh_constants import PKI_TYPE

ISTIOD_SAN = "istiod.istio-system.svc"
CA_USES = ["cert_signing", "crl_signing", "digital_signature", "content_commitment", "key_encipherment"]


@dataclass(frozen=True)
class IntermediateCa:
    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]  # always a Pulumi secret
    chain_pem: pulumi.Output[str]  # intermediate first, then root: Istio's cert-chain.pem


@dataclass(frozen=True)
class MeshPkiArgs:
    settings: PkiSettings
    cluster_names: tuple[str, ...]
    # Bring-your-own root: its key as a secret Output (from config); None to generate a root.
    root_key_pem: pulumi.Output[str] | None = None
    protect_root: bool = False


def _join_pems(*pems: str | None) -> str:
    return "".join(pem if pem.endswith("\n") else pem + "\n" for pem in pems if pem)


class MeshPki(pulumi.ComponentResource):
    root_cert_pem: pulumi.Output[str]
    intermediates: dict[str, IntermediateCa]

    def __init__(self, name: str, args: MeshPkiArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(PKI_TYPE, name, None, opts)
        self._settings = args.settings
        settings = args.settings

        if settings.bring_your_own_root:
            if args.root_key_pem is None:
                raise ValueError("a bring-your-own root certificate needs its key (rootCaKeyPem)")
            root_key_pem = pulumi.Output.secret(args.root_key_pem)
            root_cert_pem: pulumi.Output[str] = pulumi.Output.from_input(settings.root_cert_pem or "")
        else:
            root_opts = pulumi.ResourceOptions(parent=self, protect=args.protect_root)
            root_key_pem = self._private_key(f"{name}-root-key", root_opts)
            root_cert = tls.SelfSignedCert(
                f"{name}-root-cert",
                private_key_pem=root_key_pem,
                subject=tls.SelfSignedCertSubjectArgs(
                    organization=settings.organization, common_name="Root CA"
                ),
                is_ca_certificate=True,
                set_subject_key_id=True,
                allowed_uses=CA_USES,
                validity_period_hours=settings.root_validity_hours,
                opts=root_opts,
            )
            root_cert_pem = root_cert.cert_pem

        self.root_cert_pem = root_cert_pem
        self.intermediates = {
            cluster: self._intermediate(name, cluster, root_cert_pem, root_key_pem)
            for cluster in args.cluster_names
        }
        self.register_outputs({
            "root_cert_pem": self.root_cert_pem,
            "intermediate_cert_pems": {c: ca.cert_pem for c, ca in self.intermediates.items()},
        })

    def _private_key(self, resource_name: str, opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
        """A new private key's PEM, explicitly secret wherever it flows."""
        if self._settings.key_algorithm == "ECDSA":
            key = tls.PrivateKey(resource_name, algorithm="ECDSA", ecdsa_curve="P256", opts=opts)
        else:
            key = tls.PrivateKey(resource_name, algorithm="RSA", rsa_bits=4096, opts=opts)
        return pulumi.Output.secret(key.private_key_pem)

    def _intermediate(
        self, name: str, cluster: str, root_cert_pem: pulumi.Output[str], root_key_pem: pulumi.Output[str]
    ) -> IntermediateCa:
        child = pulumi.ResourceOptions(parent=self)
        key_pem = self._private_key(f"{name}-{cluster}-intermediate-key", child)
        request = tls.CertRequest(
            f"{name}-{cluster}-intermediate-csr",
            private_key_pem=key_pem,
            subject=tls.CertRequestSubjectArgs(
                organization=self._settings.organization, common_name="Intermediate CA", locality=cluster
            ),
            dns_names=[ISTIOD_SAN],
            opts=child,
        )
        cert = tls.LocallySignedCert(
            f"{name}-{cluster}-intermediate-cert",
            cert_request_pem=request.cert_request_pem,
            ca_cert_pem=root_cert_pem,
            ca_private_key_pem=root_key_pem,
            is_ca_certificate=True,
            set_subject_key_id=True,
            allowed_uses=CA_USES,
            validity_period_hours=self._settings.intermediate_validity_hours,
            early_renewal_hours=self._settings.intermediate_early_renewal_hours,
            opts=child,
        )
        return IntermediateCa(
            cert_pem=cert.cert_pem,
            key_pem=key_pem,
            chain_pem=pulumi.Output.all(cert.cert_pem, root_cert_pem).apply(lambda pems: _join_pems(*pems)),
        )
