"""Issue 20: the staged root rotation, one `pulumi up` per step, on three real istiods.

After every step each istiod has reloaded its `cacerts` (kept like a kubelet-mounted Secret), so
what it distributes (`istio-ca-root-cert` in every namespace) and what it signs (a workload
certificate asked for over its CA's gRPC with a real TokenRequest token, as an istio-agent asks)
are istiod's own. The matrix: every certificate issued by every cluster, now and one step
earlier (a workload that has not rotated yet), verifies against every cluster's current trust
bundle, for every ordered pair of clusters, at every step. Expected bundles come from what was
observed before the rotation (the old root) and during it (the one new root), never from the
program's outputs.
"""

from __future__ import annotations

import base64
import datetime
import itertools
import subprocess
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes.client import CoreV1Api

from e2e.conftest import Mesh
from e2e.fake_exoscale import admin_api
from e2e.istiod import ISTIO_NAMESPACE, Istiod, pem_certificates, workload_certificate
from e2e.kube import run_until
from e2e.mesh_views import start_istiods

ROOT_CONFIG_MAP = "istio-ca-root-cert"
WORKLOAD = ("exodemo", "default")  # namespace, service account: a workload identity in every cluster
MULTI_ROOT_DISABLED = "Multi root is disabled"
Chains = dict[str, list[str]]  # cluster -> the chain its istiod signed (leaf first)


def distributed_bundles(mesh: Mesh) -> dict[str, list[str]]:
    """Per cluster, the root bundle its istiod wrote into every namespace; one bundle per cluster,
    or an assertion naming the namespaces that disagree."""
    found = {}
    for name, control_plane in mesh.control_planes.items():
        core = CoreV1Api(admin_api(control_plane))
        maps = core.list_config_map_for_all_namespaces(field_selector=f"metadata.name={ROOT_CONFIG_MAP}").items
        by_namespace = {m.metadata.namespace: (m.data or {}).get("root-cert.pem", "") for m in maps}
        counts = {namespace: len(pem_certificates(bundle)) for namespace, bundle in by_namespace.items()}
        assert len(set(by_namespace.values())) == 1, (name, counts)
        found[name] = pem_certificates(next(iter(by_namespace.values())))
    return found


def _wait_for_bundles(mesh: Mesh, expected: list[str], step: str) -> dict[str, list[str]]:
    def settled() -> dict[str, list[str]] | None:
        bundles = distributed_bundles(mesh)
        return bundles if all(b == expected for b in bundles.values()) else None

    return run_until(settled, 60, f"{step}: every namespace of every cluster holding {len(expected)} root(s)")


def issue_chains(istiods: dict[str, Istiod], bundles: dict[str, list[str]]) -> Chains:
    return {name: workload_certificate(istiod, *WORKLOAD, "".join(bundles[name])) for name, istiod in istiods.items()}


def matrix_failures(chains: Chains, bundles: dict[str, list[str]], tmp: Path, label: str) -> list[str]:
    """Every (issuer, verifier) pair whose chain does not verify against the verifier's bundle."""
    failures = []
    for issuer, verifier in itertools.product(chains, bundles):
        leaf, *intermediates = chains[issuer]
        files = {"leaf": leaf, "untrusted": "".join(intermediates) or leaf, "bundle": "".join(bundles[verifier])}
        paths = {}
        for kind, text in files.items():
            paths[kind] = tmp / f"{label}-{issuer}-{verifier}-{kind}.pem"
            paths[kind].write_text(text)
        result = subprocess.run(["openssl", "verify", "-CAfile", str(paths["bundle"]), "-untrusted",
                                 str(paths["untrusted"]), str(paths["leaf"])], capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            failures.append(f"{label}: {issuer}'s certificate against {verifier}'s bundle: "
                            f"{result.stdout}{result.stderr}")
    return failures


def _load(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _issued_as_staged(chains: Chains, old_root: str, new_root: str, switched: set[str]) -> Chains | None:
    """The chains once each istiod signs from the intermediate its step calls for: one of the new
    root for the clusters switched so far, one of the old root for the others."""
    for name, chain in chains.items():
        if not _signed_by(_load(chain[1]), _load(new_root if name in switched else old_root)):
            return None
    return chains


def _rotation_steps(mesh: Mesh) -> list[tuple[str, set[str], dict[str, Any]]]:
    """The README runbook's stack-config edits: (step, clusters switched after it, config)."""
    generation = int(mesh.config.get("rootCaGeneration", 1))
    names = list(mesh.control_planes)
    base = {k: v for k, v in mesh.config.items() if k != "rootCaRotation"}
    rotation = {"toGeneration": generation + 1}
    return [
        ("trust", set(), {**base, "rootCaRotation": {**rotation, "phase": "trust", "switchedClusters": []}}),
        *[(f"switch {', '.join(names[:i])}", set(names[:i]),
           {**base, "rootCaRotation": {**rotation, "phase": "switch", "switchedClusters": names[:i]}})
          for i in range(1, len(names) + 1)],
        ("finalize", set(names),
         {**base, "rootCaRotation": {**rotation, "phase": "finalize", "switchedClusters": names}}),
        ("end", set(names), {**base, "rootCaGeneration": generation + 1}),
    ]


def test_a_staged_root_rotation_never_leaves_a_pair_of_clusters_without_trust(mesh: Mesh, tmp_path: Path):
    """Seen failing: with `trusted_generations` in components/rotation.py returning the new root first
    (`(rotation.to_generation, current)`), the trust step's bundle is not the old root's exact bytes
    followed by the new one. With `finalize` keeping both roots (`rotation.phase == "never"` in
    `trusted_generations`) the finalize preview changes no `cacerts`. The matrix itself is seen
    failing by the hard cut at the end."""
    istiods = start_istiods(mesh)
    assert len(istiods) == 3, "runs after the third cluster joined"
    before = distributed_bundles(mesh)
    old_bundle = next(iter(before.values()))
    assert len(old_bundle) == 1 and all(b == old_bundle for b in before.values()), before
    old_root, new_root = old_bundle[0], ""
    names = list(mesh.control_planes)
    running = issue_chains(istiods, before)  # the workloads' certificates before the rotation
    assert not matrix_failures(running, before, tmp_path, "before")
    failures: list[str] = []
    switched_before: set[str] = set()
    for index, (step, switched, config) in enumerate(_rotation_steps(mesh)):
        # The preview names exactly the `cacerts` the step changes, each updated in place: every
        # cluster's when the bundle changes (trust, finalize), the newly switched cluster's alone
        # when it switches, none at the end.
        preview = mesh.preview(config, f"rotation-{index}-{step.split(' ')[0]}")
        changes_bundle = step in ("trust", "finalize")
        expected_cacerts = set(names) if changes_bundle else switched - switched_before
        assert _cacerts_clusters(preview.updated) == expected_cacerts, (step, preview.ops)
        assert not _cacerts_clusters(preview.replaced), (step, preview.replaced)
        switched_before = switched
        mesh.up(config, "root_rotation_seconds")
        if not new_root:  # the trust step: two roots, the old one's exact bytes first
            two = run_until(lambda: _all_of_length(distributed_bundles(mesh), 2), 60, f"{step}: two roots")
            new_root = next(iter(two.values()))[1]
            assert new_root != old_root
        expected = [new_root] if step in ("finalize", "end") else [old_root, new_root]
        bundles = _wait_for_bundles(mesh, expected, step)
        for name, istiod in istiods.items():
            assert MULTI_ROOT_DISABLED not in istiod.log(), (name, step)

        def staged(bundles: dict[str, list[str]] = bundles, switched: set[str] = switched,
                   new_root: str = new_root) -> Chains | None:
            return _issued_as_staged(issue_chains(istiods, bundles), old_root, new_root, switched)

        fresh = run_until(staged, 60, f"{step}: each istiod signing from the intermediate of its stage")
        failures += matrix_failures(fresh, bundles, tmp_path, f"{step}, issued now")
        failures += matrix_failures(running, bundles, tmp_path, f"{step}, issued one step earlier")
        running = fresh
    assert not failures, "\n".join(failures)
    assert all(b == [new_root] for b in distributed_bundles(mesh).values()), "only the new root after the rotation"
    # The old root's key has left the stack's state; the new root's key is there.
    held = {_public_key_pem(r["outputs"]["publicKeyPem"]) for r in mesh.engine.resources()
            if r["type"] == "tls:index/privateKey:PrivateKey"}
    assert _public_key_pem(_load(old_root)) not in held and _public_key_pem(_load(new_root)) in held

    # The negative run: the old hard cut, a new root everywhere at once (istiod restarted, as the old
    # runbook said), the running workloads' certificates kept. The same matrix must fail here, or it
    # proves nothing.
    bundles = _wait_for_bundles(mesh, [_hard_cut(mesh)], "hard cut")
    failures = matrix_failures(running, bundles, tmp_path, "hard cut, certificates kept")
    assert len(failures) == len(running) * len(bundles), failures


def _public_key_pem(source: x509.Certificate | str) -> str:
    key = source.public_key() if isinstance(source, x509.Certificate) else serialization.load_pem_public_key(
        source.encode())
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _cacerts_clusters(urns: list[str]) -> set[str]:
    """The clusters whose `cacerts` Secret (resource `<cluster>-cacerts`) is among `urns`."""
    return {urn.rsplit("::", 1)[1].removesuffix("-cacerts") for urn in urns if urn.endswith("-cacerts")}


def _all_of_length(bundles: dict[str, list[str]], length: int) -> dict[str, list[str]] | None:
    return bundles if all(len(b) == length for b in bundles.values()) else None


def _hard_cut_cacerts() -> dict[str, str]:
    """A brand-new root and an intermediate signed by it: what the old runbook's generation bump
    put into every cluster at once."""
    now = datetime.datetime.now(datetime.UTC)
    root_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def cert(subject: str, public_key: ec.EllipticCurvePublicKey, issuer: str, signer: ec.EllipticCurvePrivateKey,
             ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=True, crl_sign=True, encipher_only=False,
                                                decipher_only=False), critical=True))
        return builder.sign(signer, hashes.SHA256())

    root = cert("Hard-cut Root CA", root_key.public_key(), "Hard-cut Root CA", root_key, True)
    intermediate = cert("Hard-cut Intermediate CA", key.public_key(), "Hard-cut Root CA", root_key, True)
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()
    return {"ca-cert.pem": pem(intermediate), "root-cert.pem": pem(root),
            "cert-chain.pem": pem(intermediate) + pem(root),
            "ca-key.pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()).decode()}


def _hard_cut(mesh: Mesh) -> str:
    """Writes a brand-new root and intermediate into every cluster's `cacerts` and restarts istiod;
    returns the new root."""
    files = _hard_cut_cacerts()
    data = {name: base64.b64encode(text.encode()).decode() for name, text in files.items()}
    for control_plane in mesh.control_planes.values():
        CoreV1Api(admin_api(control_plane)).patch_namespaced_secret("cacerts", ISTIO_NAMESPACE, {"data": data})
    # istiod takes a root that neither contains nor is contained by the old one only on restart.
    istiods: dict[str, Istiod] = mesh.extra.get("istiods", {})
    for istiod in istiods.values():
        istiod.stop()
    istiods.clear()
    start_istiods(mesh)
    return files["root-cert.pem"]
