"""The staged root rotation as data: what each cluster's `cacerts` holds for a stack config, the state a
deployment exports (`meshCaState`), and the order check against the last deployment. Free of Pulumi.

Istio's procedure (tests/integration/security/cacert_rotation, pilot/pkg/bootstrap/istio_ca.go;
reference/istio-root-rotation.md): 1. every cluster trusts old + new root, still issuing from the old
intermediate; 2. one cluster at a time issues from an intermediate of the new root; 3. only the new root.
A step is safe when every certificate any cluster issues verifies in every cluster, during the step and
after it. So, comparing a step with the last deployment (never with the config of the last step, which
may not have been deployed):
- a cluster issues from a root only once every cluster trusted that root in the last deployment;
- a cluster stops trusting a root only once no cluster issued from it in the last deployment;
- a cluster starts trusting a second root only if its istiod ran with ISTIO_MULTIROOT_MESH then
  (otherwise istiod logs "Multi root is disabled" and keeps the old bundle).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components.config import MeshSettings
from mesh_constants import PROJECT

# The stack output the program exports and reads back from the stack's last deployment.
STATE_OUTPUT = "meshCaState"
RUNBOOK = "README: Certificates, rotating the root"


@dataclass(frozen=True)
class ClusterCa:
    """What one cluster's `cacerts` holds, by root generation."""

    trusted: tuple[int, ...]  # root-cert.pem, oldest first
    issuing: int  # the root of its intermediate (ca-cert.pem, cert-chain.pem)
    multi_root_trust: bool  # istiod's ISTIO_MULTIROOT_MESH


@dataclass(frozen=True)
class Deployed:
    """The last deployment's CA state, per cluster."""

    clusters: dict[str, ClusterCa]


def trusted_generations(settings: MeshSettings) -> tuple[int, ...]:
    """The roots every cluster's root-cert.pem holds, old first (istiod < 1.30 compares bytes)."""
    rotation, current = settings.root_ca_rotation, settings.root_ca_generation
    if rotation is None:
        return (current,)
    if rotation.phase == "finalize":
        return (rotation.to_generation,)
    return (current, rotation.to_generation)


def issuing_generation(settings: MeshSettings, cluster: str) -> int:
    rotation = settings.root_ca_rotation
    if rotation is not None and (rotation.phase == "finalize" or cluster in rotation.switched_clusters):
        return rotation.to_generation
    return settings.root_ca_generation


def desired_ca(settings: MeshSettings) -> dict[str, ClusterCa]:
    trusted = trusted_generations(settings)
    return {c.name: ClusterCa(trusted, issuing_generation(settings, c.name), settings.multi_root_trust)
            for c in settings.clusters}


def root_generations(settings: MeshSettings) -> tuple[int, ...]:
    """The roots the program holds (keys, certificates): the trusted ones; after finalize the old one is gone."""
    return trusted_generations(settings)


def step_name(settings: MeshSettings) -> str:
    rotation = settings.root_ca_rotation
    if rotation is None:
        return f"rootCaGeneration {settings.root_ca_generation} without rootCaRotation"
    return f"rootCaRotation phase {rotation.phase}"


def state_output(settings: MeshSettings) -> dict[str, Any]:
    """The mesh-wide part of `meshCaState` (the per-cluster part comes from cluster_state)."""
    rotation = settings.root_ca_rotation
    return {
        "rootCaGeneration": settings.root_ca_generation,
        "trustedGenerations": list(trusted_generations(settings)),
        "multiRootTrust": settings.multi_root_trust,
        **({"rotation": {"toGeneration": rotation.to_generation, "phase": rotation.phase,
                         "switchedClusters": list(rotation.switched_clusters)}} if rotation else {}),
    }


def cluster_state(ca: ClusterCa) -> dict[str, Any]:
    return {"trustedGenerations": list(ca.trusted), "issuingGeneration": ca.issuing,
            "multiRootTrust": ca.multi_root_trust}


def deployed_from_outputs(outputs: Mapping[str, Any] | None, settings: MeshSettings) -> Deployed | None:
    """The last deployment, from the stack's own outputs (a StackReference to itself). None for a stack
    never deployed. A stack deployed before `meshCaState` existed ran the configured generation without
    the multi-root flags (they were not set then)."""
    outputs = outputs or {}
    state = outputs.get(STATE_OUTPUT)
    if isinstance(state, Mapping) and isinstance(state.get("clusters"), Mapping):
        return Deployed({
            name: ClusterCa(tuple(int(g) for g in c["trustedGenerations"]), int(c["issuingGeneration"]),
                            bool(c.get("multiRootTrust")))
            for name, c in state["clusters"].items()
        })
    if isinstance(outputs.get("clusters"), Mapping):
        generation = settings.root_ca_generation
        return Deployed({name: ClusterCa((generation,), generation, False) for name in outputs["clusters"]})
    return None


def skipped_phase(deployed: Deployed | None, settings: MeshSettings) -> str | None:
    """The first step this config would skip, as one message naming the cluster and the phase; None if
    it follows the last deployment safely (or nothing was deployed yet: no workload holds a certificate)."""
    if deployed is None:
        return None
    desired = desired_ca(settings)
    # A cluster created by this step starts with its desired cacerts: nothing of it ran before.
    before = {name: deployed.clusters.get(name, ca) for name, ca in desired.items()}
    # Clusters being removed still serve until this step deletes them.
    before.update({n: ca for n, ca in deployed.clusters.items() if n not in desired})
    step = step_name(settings)
    # A bare generation bump is named as what it is before anything else it breaks.
    issuing = _issuing_problem(before, desired, settings, step)
    if issuing is not None and settings.root_ca_rotation is None:
        return issuing
    for name, ca in desired.items():
        was = before[name]
        added = [g for g in ca.trusted if g not in was.trusted]
        if added and not was.multi_root_trust:
            return (f"{PROJECT}: {step} skips a step for cluster {name}: its istiod did not run with "
                    f"multiRootTrust (ISTIO_MULTIROOT_MESH) in the last deployment, so it would ignore root "
                    f"generation {added[0]}; first deploy multiRootTrust: true alone and restart every proxy "
                    f"({RUNBOOK})")
    if issuing is not None:
        return issuing
    for name, ca in desired.items():
        for generation in before[name].trusted:
            if generation in ca.trusted:
                continue
            issuer = next((n for n, was in before.items() if was.issuing == generation), None)
            if issuer is None:
                continue
            if generation < max(ca.trusted):
                advice = ("first switch every cluster (phase switch, switchedClusters listing every cluster) and "
                          "wait until every workload certificate was re-issued")
            else:
                advice = f"first take cluster {issuer} out of switchedClusters (phase switch) and wait"
            return (f"{PROJECT}: {step} skips a step for cluster {name}: it would stop trusting root generation "
                    f"{generation}, which cluster {issuer} still issued from in the last deployment; {advice} "
                    f"({RUNBOOK})")
    return None


def _issuing_problem(
    before: Mapping[str, ClusterCa], desired: Mapping[str, ClusterCa], settings: MeshSettings, step: str
) -> str | None:
    """A cluster that would issue from a root some cluster did not trust in the last deployment."""
    for name, ca in desired.items():
        if ca.issuing == before[name].issuing:
            continue
        lacking = next((n for n, was in before.items() if ca.issuing not in was.trusted), None)
        if lacking is None:
            continue
        if settings.root_ca_rotation is None and ca.issuing > before[name].issuing:
            advice = (f"a bare rootCaGeneration bump is a hard cut that splits the mesh; set rootCaGeneration "
                      f"back to {before[name].issuing} and start with rootCaRotation "
                      f"{{toGeneration: {ca.issuing}, phase: trust}}")
        else:
            advice = "first deploy phase trust and wait until every proxy holds both roots"
        return (f"{PROJECT}: {step} skips a step for cluster {name}: it would issue certificates from root "
                f"generation {ca.issuing}, which cluster {lacking} did not trust in the last deployment; "
                f"{advice} ({RUNBOOK})")
    return None
