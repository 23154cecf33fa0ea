"""Istio plug-in CA hierarchy: one root, one intermediate per cluster (pulumi-tls); during a staged
rotation two roots, each cluster's intermediate under the root it issues from (components/rotation.py).

Mirrors Istio's tools/certs Makefile.selfsigned.mk profile (reference/istio-multicluster.md §7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_tls as tls

from components.config import PkiSettings, RootCa
from mesh_constants import PKI_TYPE, PROJECT

ISTIOD_SAN = "istiod.istio-system.svc"
CA_USES = ["cert_signing", "crl_signing", "digital_signature", "content_commitment", "key_encipherment"]
# A root changes only through a staged rotation (a new generation beside the old one): a root replaced
# as a side effect would make clusters issue from a root their peers do not trust. These are the
# root's replace-on-change inputs (terraform-provider-tls), pinned once created.
ROOT_KEY_PINNED = ["algorithm", "rsaBits", "ecdsaCurve"]
ROOT_CERT_PINNED = ["privateKeyPem", "subject", "validityPeriodHours", "allowedUses", "isCaCertificate",
                    "setSubjectKeyId"]
# An intermediate stays signed by the root that signed it, even a re-issued one.
INTERMEDIATE_PINNED = ["caCertPem", "caPrivateKeyPem"]
ROTATE_HINT = "rotate the root in stages with rootCaRotation (README: Certificates, rotating the root)"


@dataclass(frozen=True)
class IntermediateCa:
    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]  # always a Pulumi secret
    chain_pem: pulumi.Output[str]  # intermediate first, then the root that really signed it: cert-chain.pem
    root_cert_pem: pulumi.Output[str]  # every trusted root, old first: Istio's root-cert.pem
    generation: int  # of the root it issues from


@dataclass(frozen=True)
class MeshPkiArgs:
    settings: PkiSettings
    cluster_names: tuple[str, ...]
    # The roots in every root-cert.pem, old first, and the root each cluster issues from, by generation
    # (components/rotation.py). Without a rotation: the one root generation.
    trusted_generations: tuple[int, ...]
    issuing_generations: dict[str, int]
    # Bring-your-own roots' keys as secret Outputs (from config), by generation.
    root_key_pems: dict[int, pulumi.Output[str]] = field(default_factory=dict)
    protect_root: bool = False
    # Resolves once the step is allowed (raises otherwise): nothing is keyed, signed or written before.
    gate: pulumi.Output[Any] | None = None


@dataclass(frozen=True)
class _Root:
    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]


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


def trust_bundle(*pems: str) -> str:
    """root-cert.pem: one root as it is, or the old root's exact bytes followed by the new root (istiod
    before 1.30 compares the bundles byte for byte)."""
    return pems[0] if len(pems) == 1 else _join_pems(*pems)


def generation_prefix(name: str, generation: int) -> str:
    """Resources of a root generation and of the intermediates it signs: generation 1 keeps the original
    names, so that a rotation ending (rootCaGeneration set to the new generation) renames nothing."""
    return name if generation == 1 else f"{name}-g{generation}"


class MeshPki(pulumi.ComponentResource):
    root_cert_pem: pulumi.Output[str]  # root-cert.pem, the same in every cluster
    root_cert_pems: dict[int, pulumi.Output[str]]  # every root the program holds, by generation
    intermediates: dict[str, IntermediateCa]

    def __init__(self, name: str, args: MeshPkiArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(PKI_TYPE, name, None, opts)
        self._settings = args.settings
        self._gate = args.gate
        settings = args.settings
        configured = {root.generation: root for root in (settings.current_root, settings.new_root) if root}
        roots = {
            generation: self._root(name, configured[generation], args.root_key_pems.get(generation),
                                   args.protect_root)
            for generation in sorted({*args.trusted_generations, *args.issuing_generations.values()})
        }
        self.root_cert_pems = {generation: root.cert_pem for generation, root in roots.items()}
        self.root_cert_pem = pulumi.Output.all(*(roots[g].cert_pem for g in args.trusted_generations)).apply(
            lambda pems: trust_bundle(*pems))
        self.intermediates = {
            cluster: self._intermediate(name, generation, cluster, roots[generation])
            for cluster, generation in ((c, args.issuing_generations[c]) for c in args.cluster_names)
        }
        self.register_outputs({
            "root_cert_pem": self.root_cert_pem,
            "intermediate_cert_pems": {c: ca.cert_pem for c, ca in self.intermediates.items()},
        })

    def _gated(self, value: pulumi.Input[Any]) -> pulumi.Output[Any]:
        """`value` once the step is allowed."""
        if self._gate is None:
            return pulumi.Output.from_input(value)
        return pulumi.Output.all(self._gate, value).apply(lambda both: both[1])

    def _root(self, name: str, root: RootCa, key_pem: pulumi.Output[str] | None, protect: bool) -> _Root:
        prefix = generation_prefix(name, root.generation)
        if root.cert_pem is not None:
            if key_pem is None:
                raise ValueError(f"a bring-your-own root certificate (generation {root.generation}) needs its key")
            return _Root(pulumi.Output.from_input(root.cert_pem), pulumi.Output.secret(key_pem))
        settings = self._settings
        root_key = self._private_key(
            f"{prefix}-root-key", pulumi.ResourceOptions(parent=self, protect=protect, ignore_changes=ROOT_KEY_PINNED))
        root_key_pem = pulumi.Output.secret(root_key.private_key_pem)
        root_cert = tls.SelfSignedCert(
            f"{prefix}-root-cert",
            private_key_pem=root_key_pem,
            subject=tls.SelfSignedCertSubjectArgs(organization=settings.organization, common_name="Root CA"),
            is_ca_certificate=True,
            set_subject_key_id=True,
            allowed_uses=CA_USES,
            validity_period_hours=settings.root_validity_hours,
            opts=pulumi.ResourceOptions(parent=self, protect=protect, ignore_changes=ROOT_CERT_PINNED),
        )
        pulumi.Output.all(
            root_cert.subject.apply(lambda subject: subject.organization if subject else None),
            root_cert.validity_period_hours,
            root_key.algorithm,
        ).apply(lambda live: self._warn_about_root_drift(*live))
        return _Root(root_cert.cert_pem, root_key_pem)

    def _warn_about_root_drift(self, organization: str, validity_hours: int, algorithm: str) -> None:
        drift = root_drift(organization, validity_hours, algorithm, self._settings)
        if drift:
            pulumi.log.warn(
                "the root CA is kept unchanged: " + "; ".join(drift) + f". To use the new settings, {ROTATE_HINT}.",
                resource=self,
            )

    def _private_key(self, resource_name: str, opts: pulumi.ResourceOptions) -> tls.PrivateKey:
        # The algorithm waits for the gate, so a refused step creates no key (and so no certificate).
        if self._settings.key_algorithm == "ECDSA":
            return tls.PrivateKey(resource_name, algorithm=self._gated("ECDSA"), ecdsa_curve="P256", opts=opts)
        return tls.PrivateKey(resource_name, algorithm=self._gated("RSA"), rsa_bits=4096, opts=opts)

    def _intermediate(self, name: str, generation: int, cluster: str, root: _Root) -> IntermediateCa:
        prefix = generation_prefix(name, generation)
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
            ca_cert_pem=root.cert_pem,
            ca_private_key_pem=root.key_pem,
            is_ca_certificate=True,
            set_subject_key_id=True,
            allowed_uses=CA_USES,
            validity_period_hours=self._settings.intermediate_validity_hours,
            early_renewal_hours=self._settings.intermediate_early_renewal_hours,
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=INTERMEDIATE_PINNED),
        )
        signing_root = pulumi.Output.all(cert.ca_cert_pem, root.cert_pem).apply(lambda pems: live_root(*pems))
        return IntermediateCa(
            cert_pem=self._gated(cert.cert_pem),
            key_pem=self._gated(key_pem),
            chain_pem=self._gated(pulumi.Output.all(cert.cert_pem, signing_root).apply(lambda pems: _join_pems(*pems))),
            root_cert_pem=self._gated(pulumi.Output.all(signing_root, self.root_cert_pem).apply(lambda pems: pems[1])),
            generation=generation,
        )
