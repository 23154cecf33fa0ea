"""The staged root rotation (README: Certificates, rotating the root), replayed as the stack-config edits
of tests/conftest.py ROTATION_STEPS on three clusters, one `pulumi up` each, each run against the last
one's state and outputs. Expected bundles and chains come from the certificates themselves
(`cryptography`: who signed whom) and from the step's config, never from the program's own values."""

from __future__ import annotations

import json

import pulumi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from testing import engine
from testing.program import Recording, run_failing_program, run_program
from tests.conftest import ROTATION_STEPS, rotation, three_cluster_config
from tests.test_pki import cacerts, certs

CLUSTERS = ("cluster1", "cluster2", "cluster3")
SMOKE_TEST = "cluster1-exodemo-smoke-test"  # runs again whenever a certificate changes, by design


def fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def fingerprints(pem: str) -> list[bytes]:
    return [fingerprint(c) for c in certs(pem)]


def old_root(steps: dict[str, Recording]) -> x509.Certificate:
    (root,) = certs(cacerts(steps["before"], "cluster1")["root-cert.pem"])
    return root


def new_root(steps: dict[str, Recording]) -> x509.Certificate:
    """The root the trust step added: the bundle's self-signed certificate that is not the old root."""
    added = [c for c in certs(cacerts(steps["trust"], "cluster1")["root-cert.pem"])
             if fingerprint(c) != fingerprint(old_root(steps))]
    (root,) = added
    root.verify_directly_issued_by(root)
    return root


def switched_in(edit: dict, cluster: str) -> bool:
    rotation_block = edit.get("rootCaRotation")
    if rotation_block is None:
        return edit.get("rootCaGeneration", 1) == 2
    return rotation_block["phase"] == "finalize" or cluster in rotation_block["switchedClusters"]


def assert_issues_from(files: dict[str, str], root: x509.Certificate) -> None:
    """ca-cert.pem signed by `root`, its key in ca-key.pem, cert-chain.pem = that intermediate, then `root`."""
    (intermediate,) = certs(files["ca-cert.pem"])
    intermediate.verify_directly_issued_by(root)
    key = serialization.load_pem_private_key(files["ca-key.pem"].encode(), None)
    assert key.public_key().public_numbers() == intermediate.public_key().public_numbers()
    assert fingerprints(files["cert-chain.pem"]) == [fingerprint(intermediate), fingerprint(root)]


# The phases ------------------------------------------------------------------------------------


def test_trust_adds_the_new_root_after_the_old_roots_exact_bytes_and_keeps_every_intermediate(rotation_steps):
    before, trust = rotation_steps["before"], rotation_steps["trust"]
    old, new = old_root(rotation_steps), new_root(rotation_steps)
    assert fingerprint(old) != fingerprint(new)
    for cluster in CLUSTERS:
        files, was = cacerts(trust, cluster), cacerts(before, cluster)
        # istiod < 1.30 compares bytes: the old bundle is the new one's prefix.
        assert files["root-cert.pem"].startswith(was["root-cert.pem"])
        assert fingerprints(files["root-cert.pem"]) == [fingerprint(old), fingerprint(new)]
        assert {k: files[k] for k in ("ca-cert.pem", "ca-key.pem", "cert-chain.pem")} == \
            {k: was[k] for k in ("ca-cert.pem", "ca-key.pem", "cert-chain.pem")}
        assert_issues_from(files, old)
    assert trust.changed() == {
        "mesh-ca-g2-root-key": engine.CREATE, "mesh-ca-g2-root-cert": engine.CREATE,
        **{f"{c}-cacerts": engine.UPDATE for c in CLUSTERS}, SMOKE_TEST: engine.REPLACE,
    }


@pytest.mark.parametrize("step, cluster", [("switch cluster1", "cluster1"), ("switch cluster2", "cluster2"),
                                           ("switch cluster3", "cluster3")])
def test_switch_moves_one_cluster_to_an_intermediate_of_the_new_root_and_touches_nothing_else(
    rotation_steps, step, cluster
):
    names = [name for name, _ in ROTATION_STEPS]
    previous, current = rotation_steps[names[names.index(step) - 1]], rotation_steps[step]
    old, new = old_root(rotation_steps), new_root(rotation_steps)
    files = cacerts(current, cluster)
    assert_issues_from(files, new)
    for other in CLUSTERS:
        # Every cluster still trusts both roots, old first.
        assert fingerprints(cacerts(current, other)["root-cert.pem"]) == [fingerprint(old), fingerprint(new)]
        if other != cluster:
            assert cacerts(current, other) == cacerts(previous, other)
            assert_issues_from(cacerts(current, other), new if switched_in(dict(ROTATION_STEPS)[step], other) else old)
    assert current.changed() == {
        **{f"mesh-ca-g2-{cluster}-intermediate-{part}": engine.CREATE for part in ("key", "csr", "cert")},
        **{f"mesh-ca-{cluster}-intermediate-{part}": engine.DELETE for part in ("key", "csr", "cert")},
        f"{cluster}-cacerts": engine.UPDATE, SMOKE_TEST: engine.REPLACE,
    }


def every_string(value: object) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in every_string(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in every_string(v)]
    return [value] if isinstance(value, str) else []


def test_finalize_trusts_only_the_new_root_and_the_old_roots_key_leaves_the_state(rotation_steps):
    finalize, new = rotation_steps["finalize"], new_root(rotation_steps)
    for cluster in CLUSTERS:
        files = cacerts(finalize, cluster)
        assert fingerprints(files["root-cert.pem"]) == [fingerprint(new)]
        assert_issues_from(files, new)
    assert finalize.changed() == {
        "mesh-ca-root-key": engine.DELETE, "mesh-ca-root-cert": engine.DELETE,
        **{f"{c}-cacerts": engine.UPDATE for c in CLUSTERS}, SMOKE_TEST: engine.REPLACE,
    }
    old_key = rotation_steps["before"].named("mesh-ca-root-key").outputs["privateKeyPem"]
    old_cert = rotation_steps["before"].named("mesh-ca-root-cert").outputs["certPem"]
    state = [*(r.inputs for r in finalize.resources), *(r.outputs for r in finalize.resources),
             *(o.value for o in finalize.outputs.values())]
    assert not any(old_key in s or old_cert in s for s in every_string(state))
    assert finalize.outputs["rootCertPem"].value == cacerts(finalize, "cluster1")["root-cert.pem"]


def test_ending_the_rotation_block_replaces_nothing(rotation_steps):
    assert rotation_steps["end"].changed() == {}
    assert rotation_steps["end"].outputs["rootCertPem"].value == rotation_steps["finalize"].outputs["rootCertPem"].value


def test_exported_state_says_what_each_cluster_runs(rotation_steps):
    """meshCaState, which the next step (and the e2e) reads: per cluster, from the step's config."""
    for name, edit in ROTATION_STEPS:
        state = rotation_steps[name].outputs["meshCaState"]
        assert not state.secret
        block = edit.get("rootCaRotation")
        trusted = [2] if block is None or block["phase"] == "finalize" else [1, 2]
        assert state.value["trustedGenerations"] == trusted
        assert set(state.value["roots"]) == {str(g) for g in trusted}
        for cluster in CLUSTERS:
            exported = state.value["clusters"][cluster]
            issuing = 2 if switched_in(edit, cluster) else 1
            assert (exported["trustedGenerations"], exported["issuingGeneration"], exported["multiRootTrust"]) == \
                (trusted, issuing, True), (name, cluster)
            assert exported["intermediateCertPem"] == cacerts(rotation_steps[name], cluster)["ca-cert.pem"]
        for generation, pem in state.value["roots"].items():
            root = new_root(rotation_steps) if generation == "2" else old_root(rotation_steps)
            assert fingerprints(pem) == [fingerprint(root)]
        assert state.value.get("rotation") == block


def test_a_new_stack_may_start_in_any_phase():
    """Nothing runs yet, so no certificate can be rejected: the guard has nothing to compare with."""
    recording = run_program({**three_cluster_config(), **rotation("switch", "cluster2")})
    (old, new) = certs(cacerts(recording, "cluster1")["root-cert.pem"])
    assert_issues_from(cacerts(recording, "cluster1"), old)
    assert_issues_from(cacerts(recording, "cluster2"), new)


# The guards ------------------------------------------------------------------------------------


def refused(edit: dict, previous: Recording, base: dict | None = None) -> str:
    error, registered = run_failing_program({**(base or three_cluster_config()), **edit}, previous=previous)
    assert isinstance(error, pulumi.RunError), error
    # Nothing is keyed, signed or written to a cluster before the check passed.
    assert not [r.name for r in registered if r.type.startswith("tls:") or r.name.endswith("-cacerts")]
    message = str(error)
    assert "\n" not in message
    return message


def test_switching_before_every_cluster_trusts_the_new_root_is_refused(rotation_steps):
    message = refused(rotation("switch", "cluster2"), rotation_steps["before"])
    assert message.startswith("sks-istio-mesh: rootCaRotation phase switch skips a step for cluster cluster2: ")
    assert "which cluster cluster1 did not trust in the last deployment" in message
    assert "first deploy phase trust" in message


def test_finalizing_before_every_cluster_has_switched_is_refused(rotation_steps):
    message = refused(rotation("finalize"), rotation_steps["switch cluster2"])
    assert message.startswith("sks-istio-mesh: rootCaRotation phase finalize skips a step for cluster cluster1: ")
    assert "stop trusting root generation 1, which cluster cluster3 still issued from" in message
    assert "first switch every cluster" in message


def test_starting_a_rotation_before_the_flags_were_deployed_is_refused(three_clusters):
    without_flags = run_program({**three_cluster_config(), "multiRootTrust": False}, previous=three_clusters)
    message = refused(rotation("trust"), without_flags)
    assert message.startswith("sks-istio-mesh: rootCaRotation phase trust skips a step for cluster cluster1: ")
    assert "did not run with multiRootTrust (ISTIO_MULTIROOT_MESH)" in message
    # The flags' own step: one istiod upgrade per cluster and nothing else.
    with_flags = run_program(three_cluster_config(), previous=without_flags)
    assert with_flags.changed() == {f"{c}-istiod": engine.UPDATE for c in CLUSTERS}
    assert run_program({**three_cluster_config(), **rotation("trust")}, previous=with_flags).changed()


def test_a_stack_deployed_before_the_exported_state_had_no_flags(three_clusters):
    legacy = Recording(three_clusters.resources, {k: v for k, v in three_clusters.outputs.items()
                                                  if k != "meshCaState"})
    assert "did not run with multiRootTrust" in refused(rotation("trust"), legacy)


def test_a_bare_generation_bump_is_refused_and_points_to_the_staged_rotation(three_clusters):
    message = refused({"rootCaGeneration": 2}, three_clusters)
    assert message.startswith(
        "sks-istio-mesh: rootCaGeneration 2 without rootCaRotation skips a step for cluster cluster1: ")
    assert "a bare rootCaGeneration bump is a hard cut" in message
    assert "rootCaRotation {toGeneration: 2, phase: trust}" in message


def test_dropping_the_rotation_while_a_cluster_issues_from_the_new_root_is_refused(rotation_steps):
    message = refused({}, rotation_steps["switch cluster1"])
    assert "stop trusting root generation 2, which cluster cluster1 still issued from" in message
    assert "take cluster cluster1 out of switchedClusters" in message


def test_each_phase_rolls_back_one_step(rotation_steps):
    back_to_trust = run_program({**three_cluster_config(), **rotation("trust")},
                                previous=rotation_steps["switch cluster1"])
    assert_issues_from(cacerts(back_to_trust, "cluster1"), old_root(rotation_steps))
    back_to_one_root = run_program(three_cluster_config(), previous=rotation_steps["trust"])
    assert back_to_one_root.changed() == {
        "mesh-ca-g2-root-key": engine.DELETE, "mesh-ca-g2-root-cert": engine.DELETE,
        **{f"{c}-cacerts": engine.UPDATE for c in CLUSTERS}, SMOKE_TEST: engine.REPLACE,
    }
    for cluster in CLUSTERS:
        assert cacerts(back_to_one_root, cluster) == cacerts(rotation_steps["before"], cluster)


def test_the_stack_reads_its_own_last_deployment(rotation_steps):
    (reference,) = rotation_steps["trust"].reads
    assert reference.type == "pulumi:pulumi:StackReference"
    assert reference.id == "organization/sks-istio-mesh/dev"  # a file or S3 backend's stack name
    # Numbers come back as floats, as from the real engine (protobuf Struct).
    exported = json.loads(json.dumps(rotation_steps["before"].outputs["meshCaState"].value), parse_int=float)
    assert reference.outputs["outputs"]["meshCaState"] == exported
    assert "kubeconfig" in reference.outputs["secretOutputNames"]


