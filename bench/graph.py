"""The deploy's dependency graph, weighted with typical durations: critical path and serial sum.

Pure: works on anything shaped like tests.harness.Registered (urn, name, type, parent, custom,
all_dependencies) and imports nothing from Pulumi, so it is tested on hand-made graphs.

A resource starts once everything it depends on exists: its dependencies, its provider (both in
`all_dependencies`) and its parent (a child registers only after its parent's URN is known, which
for a custom parent is after the parent was created). The critical path is the longest chain of
such waits, weighted by the table below: the shortest possible `pulumi up` if the engine ran
everything else in parallel. The serial sum is the same work done one resource at a time.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Mapping
from typing import Protocol

SKS_CLUSTER = "exoscale:index/sksCluster:SksCluster"
SKS_NODEPOOL = "exoscale:index/sksNodepool:SksNodepool"
NLB = "exoscale:index/nlb:Nlb"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
JOB = "kubernetes:batch/v1:Job"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SECRET = "kubernetes:core/v1:Secret"
K8S_PROVIDER = "pulumi:providers:kubernetes"
PROVIDER_PREFIX = "pulumi:providers:"

# Typical create durations in minutes, per Pulumi type token. "reference" below is
# ../shared/reference/exoscale-sks-and-pulumi.md.
DURATIONS: dict[str, float] = {
    # reference §8: "control plane ≈1-2 min (1m40s in a public OpenTofu lab, 1m9s on the
    # feature-gates page)"; the upper end, since `pro` clusters are HA.
    SKS_CLUSTER: 2.0,
    # reference §8: "nodes ≈1 min later" than the control plane; the nodepool resource waits for
    # its instances.
    SKS_NODEPOOL: 1.0,
    # reference §5: helm.v3.Release awaits readiness by default (no skip_await here; atomic
    # releases cannot skip it). Typical for istiod pulling its image and turning Ready, and for the
    # east-west gateway waiting for its LoadBalancer address; generous for `base` (CRDs and RBAC
    # only). Estimate, not measured: with istiod's readiness, 2 min.
    HELM_RELEASE: 2.0,
    # Estimate (no published timing): an NLB is one asynchronous Exoscale API operation, with no
    # instances to boot; half a minute.
    NLB: 0.5,
    # The smoke test Job: Pulumi awaits completion; the script retries every 10 s
    # (components/demo.py SMOKE_DELAY_SECONDS) until cross-cluster endpoints have synced, after the
    # pod and its sidecar start. Estimate: 2 min (its deadline is 10 min).
    JOB: 2.0,
    # Pulumi awaits a Deployment's rollout: image pull and readiness probe. Estimate: 1 min.
    DEPLOYMENT: 1.0,
    # Kubernetes providers are configured in the engine, with no cloud call.
    K8S_PROVIDER: 0.0,
}
# Check: one cluster's chain (cluster, nodepool, istio-system namespace, base, istiod, east-west
# gateway) comes to 9.1 min, inside reference §8's "budget 5-10 min/cluster (inference)".
# Everything else (security groups and rules, anti-affinity groups, kubeconfigs, namespaces,
# Secrets, Services, Istio custom resources, pulumi-tls keys and certificates): one API call, or
# local work in the provider, without waiting for anything to become ready. Six seconds.
OTHER_MINUTES = 0.1
# Component resources (custom=False) are groupings in the program: they cost nothing, but a
# resource that waits for one waits for what the component waits for. Providers not in the table
# cost nothing either.

# One line per entry for bench/RESULTS.md; the comments above are the full story.
DURATION_NOTES: dict[str, str] = {
    SKS_CLUSTER: "control plane ~1-2 min (reference §8); upper end",
    SKS_NODEPOOL: "nodes ≈1 min after the control plane (reference §8)",
    HELM_RELEASE: "awaits readiness (reference §5); estimate for istiod/gateway, generous for base",
    NLB: "one async API operation, no instances; estimate",
    JOB: "smoke test: pod + sidecar start, retries every 10 s until endpoints sync; estimate",
    DEPLOYMENT: "Pulumi awaits the rollout (image pull, readiness); estimate",
    K8S_PROVIDER: "configured in the engine, no cloud call",
}


class Resource(Protocol):
    urn: str
    name: str
    type: str
    parent: str
    custom: bool

    @property
    def all_dependencies(self) -> set[str]: ...


def minutes_of(resource: Resource, durations: Mapping[str, float] = DURATIONS,
               other: float = OTHER_MINUTES) -> float:
    """The typical create duration of one resource."""
    if not resource.custom:
        return 0.0
    if resource.type in durations:
        return durations[resource.type]
    if resource.type.startswith(PROVIDER_PREFIX):
        return 0.0
    return other


def predecessors(resource: Resource, known: Mapping[str, Resource]) -> list[str]:
    """What `resource` waits for, among the resources of the graph (the Stack is not one)."""
    urns = set(resource.all_dependencies)
    if resource.parent:
        urns.add(resource.parent)
    return sorted(urn for urn in urns if urn in known and urn != resource.urn)


def finish_times(resources: Iterable[Resource], durations: Mapping[str, float] = DURATIONS,
                 other: float = OTHER_MINUTES) -> dict[str, float]:
    """Earliest finish (minutes after `pulumi up` starts) of every resource, with unlimited
    parallelism. Raises graphlib.CycleError on a cycle."""
    known = {r.urn: r for r in resources}
    graph = {urn: predecessors(r, known) for urn, r in known.items()}
    finish: dict[str, float] = {}
    for urn in graphlib.TopologicalSorter(graph).static_order():
        start = max((finish[p] for p in graph[urn]), default=0.0)
        finish[urn] = start + minutes_of(known[urn], durations, other)
    return finish


def critical_path(resources: Iterable[Resource], durations: Mapping[str, float] = DURATIONS,
                  other: float = OTHER_MINUTES) -> tuple[float, list[Resource]]:
    """The longest chain of waits, in estimated minutes, and the chain itself, first resource
    first. Zero-cost resources at the start of the chain (a component that only parents it) are
    left out; zero-cost resources inside it (a provider, a component passed through) stay."""
    known = {r.urn: r for r in resources}
    if not known:
        return 0.0, []
    finish = finish_times(known.values(), durations, other)
    # Among equally long chains the one through the smallest URN wins: registration order under
    # asyncio varies between runs, URNs do not. (max keeps the first of equal elements.)
    last = max(sorted(known), key=finish.__getitem__)
    chain = [known[last]]
    while True:
        waits = [p for p in predecessors(chain[-1], known) if finish[p] > 0]
        if not waits:
            break
        chain.append(known[max(waits, key=finish.__getitem__)])
    chain.reverse()
    return round(finish[last], 6), chain


def serial_minutes(resources: Iterable[Resource], durations: Mapping[str, float] = DURATIONS,
                   other: float = OTHER_MINUTES) -> float:
    """The same work one resource at a time: the sum of every resource's duration."""
    return round(sum(minutes_of(r, durations, other) for r in resources), 6)
