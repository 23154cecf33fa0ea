"""The deploy's dependency graph, weighted with typical durations: critical path and serial sum.

Pure: works on anything shaped like testing.program.Registered (urn, name, type, parent, custom,
inputs, all_dependencies) and imports nothing from Pulumi, so it is tested on hand-made graphs.

A resource starts once everything it depends on exists: its dependencies, its provider (both in
`all_dependencies`) and its parent (a child registers only after its parent's URN is known, which
for a custom parent is after the parent was created). The critical path is the longest chain of
such waits, weighted by the table below: the shortest possible `pulumi up` if the engine ran
everything else in parallel. The serial sum is the same work done one resource at a time.
"""

from __future__ import annotations

import graphlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

SKS_CLUSTER = "exoscale:index/sksCluster:SksCluster"
SKS_NODEPOOL = "exoscale:index/sksNodepool:SksNodepool"
NLB = "exoscale:index/nlb:Nlb"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
JOB = "kubernetes:batch/v1:Job"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SECRET = "kubernetes:core/v1:Secret"
K8S_PROVIDER = "pulumi:providers:kubernetes"
PROVIDER_PREFIX = "pulumi:providers:"
KUBERNETES_PREFIX = "kubernetes:"


def helm_chart(chart: str) -> str:
    """The table's key for Helm releases of one chart: charts differ by minutes (one applies API
    objects only, another waits for pods), so a chart may have its own row."""
    return f"{HELM_RELEASE}(chart={chart})"


# Typical create durations in minutes, per Pulumi type token (Helm releases per chart where the
# chart matters). "reference" below is ../shared/reference/exoscale-sks-and-pulumi.md; `make e2e`
# measures the Kubernetes rows on simulated nodes, and `make bench` prints that beside them.
DURATIONS: dict[str, float] = {
    # reference §8: "control plane ≈1-2 min (1m40s in a public OpenTofu lab, 1m9s on the
    # feature-gates page)"; the upper end, since `pro` clusters are HA.
    SKS_CLUSTER: 2.0,
    # reference §8: "nodes ≈1 min later" than the control plane; the nodepool resource waits for
    # its instances.
    SKS_NODEPOOL: 1.0,
    # A chart that starts pods (istiod, the gateways): helm.v3.Release awaits readiness by default
    # (reference §5; atomic releases cannot skip it): istiod pulling its image and turning Ready,
    # the east-west gateway waiting for its LoadBalancer address. Estimate, not measured: 2 min.
    HELM_RELEASE: 2.0,
    # Istio's base chart (the pinned 1.30.3 templates: CRDs, a ValidatingWebhookConfiguration, a
    # ValidatingAdmissionPolicy, the reader ServiceAccount; no pods): Helm's await has nothing to
    # wait for beyond the CRDs being established, so it costs what any API object costs.
    helm_chart("base"): 0.1,
    # Estimate (no published timing): an NLB is one asynchronous Exoscale API operation, with no
    # instances to boot; half a minute.
    NLB: 0.5,
    # The smoke test Job: Pulumi awaits completion; the script retries every 10 s
    # (components/smoke_test.py SMOKE_DELAY_SECONDS) until cross-cluster endpoints have synced,
    # after the pod and its sidecar start. Estimate: 2 min (its deadline holds every attempt).
    JOB: 2.0,
    # Pulumi awaits a Deployment's rollout: image pull and readiness probe. Estimate: 1 min.
    DEPLOYMENT: 1.0,
    # Kubernetes providers are configured in the engine, with no cloud call.
    K8S_PROVIDER: 0.0,
}
# Check: one cluster's chain (cluster, nodepool, istiod, east-west gateway) comes to 7 min, inside
# reference §8's "budget 5-10 min/cluster (inference)".
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
    HELM_RELEASE: "charts with pods (istiod, gateways): awaits readiness (reference §5); estimate",
    helm_chart("base"): "CRDs, RBAC, webhook configurations, no pods (pinned chart templates): one apply",
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
    inputs: Mapping[str, Any]

    @property
    def all_dependencies(self) -> set[str]: ...


# What one resource costs, in minutes: the duration table, or a measurement.
Cost = Callable[[Resource], float]


def table_key(resource: Resource, durations: Mapping[str, float] = DURATIONS) -> str:
    """The row of the duration table that prices `resource`: its chart's row for a Helm release of
    a chart with one, else its type's."""
    if resource.type == HELM_RELEASE:
        chart = helm_chart(str(resource.inputs.get("chart", "")))
        if chart in durations:
            return chart
    return resource.type


def minutes_of(resource: Resource, durations: Mapping[str, float] = DURATIONS,
               other: float = OTHER_MINUTES) -> float:
    """The typical create duration of one resource."""
    if not resource.custom:
        return 0.0
    key = table_key(resource, durations)
    if key in durations:
        return durations[key]
    if resource.type.startswith(PROVIDER_PREFIX):
        return 0.0
    return other


def by_table(durations: Mapping[str, float] = DURATIONS, other: float = OTHER_MINUTES) -> Cost:
    """The cost of a resource by a duration table (e.g. a test's own)."""
    return lambda resource: minutes_of(resource, durations, other)


def kubernetes_only(cost: Cost) -> Cost:
    """`cost` for Kubernetes objects, nothing for the rest: what `make e2e` can measure."""
    return lambda resource: cost(resource) if resource.type.startswith(KUBERNETES_PREFIX) else 0.0


def predecessors(resource: Resource, known: Mapping[str, Resource]) -> list[str]:
    """What `resource` waits for, among the resources of the graph (the Stack is not one)."""
    urns = set(resource.all_dependencies)
    if resource.parent:
        urns.add(resource.parent)
    return sorted(urn for urn in urns if urn in known and urn != resource.urn)


def finish_times(resources: Iterable[Resource], cost: Cost = minutes_of) -> dict[str, float]:
    """Earliest finish (minutes after `pulumi up` starts) of every resource, with unlimited
    parallelism. Raises graphlib.CycleError on a cycle."""
    known = {r.urn: r for r in resources}
    graph = {urn: predecessors(r, known) for urn, r in known.items()}
    finish: dict[str, float] = {}
    for urn in graphlib.TopologicalSorter(graph).static_order():
        start = max((finish[p] for p in graph[urn]), default=0.0)
        finish[urn] = start + cost(known[urn])
    return finish


def critical_path(resources: Iterable[Resource], cost: Cost = minutes_of) -> tuple[float, list[Resource]]:
    """The longest chain of waits, in minutes, and the chain itself, first resource first.
    Zero-cost resources at the start of the chain (a component that only parents it) are left
    out; zero-cost resources inside it (a provider, a component passed through) stay."""
    known = {r.urn: r for r in resources}
    if not known:
        return 0.0, []
    finish = finish_times(known.values(), cost)
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


def serial_minutes(resources: Iterable[Resource], cost: Cost = minutes_of) -> float:
    """The same work one resource at a time: the sum of every resource's duration."""
    return round(sum(cost(r) for r in resources), 6)
