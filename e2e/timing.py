"""The critical path of one engine run, from the engine's own per-resource events.

A resource's step starts when the engine reports it (ResourcePreEvent: the program registered it,
so everything its inputs needed had resolved) and ends with its ResOutputsEvent. The step that held
a resource back is the one among its dependencies and its provider (from the engine's state) that
ended last before it started. Walking those back from the last step to end gives the chain that
set the run's length; its steps' durations plus the gaps between them are the critical path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from e2e.engine import ResourceStep, RunReport


@dataclass
class CriticalPath:
    seconds: float  # from the first step's start to the last step's end, along the chain
    busy_seconds: float  # the chain's steps' own durations
    chain: list[ResourceStep]


def blocking_edges(resources: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """URN -> the URNs it waits for: its dependencies and its provider, as the engine records them."""
    edges: dict[str, set[str]] = {}
    for resource in resources:
        waits = set(resource.get("dependencies") or [])
        for deps in (resource.get("propertyDependencies") or {}).values():
            waits.update(deps)
        if resource.get("provider"):
            waits.add(resource["provider"].rsplit("::", 1)[0])
        edges[resource["urn"]] = waits
    return edges


def critical_path(report: RunReport, resources: Iterable[Mapping[str, Any]]) -> CriticalPath:
    """Over the custom resources (providers included): components and the stack only wrap them."""
    resources = list(resources)
    edges = blocking_edges(resources)
    custom = {r["urn"] for r in resources if r.get("custom")}
    done = {urn: step for urn, step in report.steps.items() if step.ended is not None and urn in custom}
    if not done:
        return CriticalPath(0.0, 0.0, [])
    step = max(done.values(), key=lambda s: s.ended or 0.0)
    chain = [step]
    while True:
        before = [done[urn] for urn in edges.get(step.urn, ()) if urn in done
                  and (done[urn].ended or 0.0) <= step.started + 1e-3]
        if not before:
            break
        step = max(before, key=lambda s: s.ended or 0.0)
        chain.append(step)
    chain.reverse()
    busy = sum((s.ended or 0.0) - s.started for s in chain)
    return CriticalPath((chain[-1].ended or 0.0) - chain[0].started, busy, chain)
