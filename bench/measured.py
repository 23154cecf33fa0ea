"""The Kubernetes part of the deploy as `make e2e` measured it, beside the duration table's estimate.

`make e2e` deploys a stack onto local Kubernetes control planes with simulated nodes and, after a
run, writes e2e/.out/timings.json (git-ignored):

    {"stack": "dev", "clusters": 2, "kubernetes_version": "v1.34.2",
     "phases": {"control_planes_seconds": 41.0, "apply_seconds": 95.2, "helm_seconds": 60.1,
                "teardown_seconds": 20.3},
     "resources": [{"type": "kubernetes:helm.sh/v3:Release", "name": "cluster1-istiod",
                    "seconds": 21.5}, ...]}

`resources` holds every Kubernetes resource the run created with the wall time of its apply plus
await; `apply_seconds` is the whole program run, `helm_seconds` the sum over Helm releases. Only
the Kubernetes objects are real there (no SKS, no NLB), so only they are compared: per row of the
duration table, and as the Kubernetes part of the critical path (the stack's graph with every other
resource at zero), costed once by the table and once by the measurement.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.graph import KUBERNETES_PREFIX, Resource, critical_path, kubernetes_only, minutes_of, table_key

ABSENT = "no e2e measurement: run make e2e"
PHASES = (
    ("control_planes_seconds", "control planes"),
    ("apply_seconds", "apply (whole program run)"),
    ("helm_seconds", "Helm releases (sum)"),
    ("teardown_seconds", "teardown"),
)


@dataclass(frozen=True)
class Timings:
    stack: str
    clusters: int
    kubernetes_version: str
    phases: dict[str, float]
    # Seconds of apply plus await, by (Pulumi type, resource name).
    seconds: dict[tuple[str, str], float]


def read_timings(path: Path) -> Timings | None:
    """The e2e run's timings, or None if `make e2e` has not written any."""
    if not path.is_file():
        return None
    document = json.loads(path.read_text())
    return Timings(
        stack=document["stack"],
        clusters=int(document["clusters"]),
        kubernetes_version=document["kubernetes_version"],
        phases={key: float(value) for key, value in document["phases"].items()},
        seconds={(entry["type"], entry["name"]): float(entry["seconds"]) for entry in document["resources"]},
    )


@dataclass(frozen=True)
class Row:
    """One row of the duration table: its estimate and what e2e measured for the objects it prices."""

    key: str
    table_seconds: float
    measured_seconds: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Comparison:
    # The Kubernetes part of the critical path, in minutes.
    table_minutes: float
    measured_minutes: float
    rows: list[Row]
    # Kubernetes resources of the stack with no measured time (costed by the table instead), and
    # measured resources the stack does not have (e2e ran another revision of the program).
    unmeasured: list[str]
    unmatched: list[str]


def compare(resources: Sequence[Resource], timings: Timings) -> Comparison:
    """The stack's Kubernetes objects, costed by the duration table and by `timings`."""
    kubernetes = [r for r in resources if r.type.startswith(KUBERNETES_PREFIX) and r.custom]

    def measured_minutes(resource: Resource) -> float:
        seconds = timings.seconds.get((resource.type, resource.name))
        return minutes_of(resource) if seconds is None else seconds / 60

    rows: dict[str, Row] = {}
    for resource in kubernetes:
        key = table_key(resource)
        row = rows.setdefault(key, Row(key, minutes_of(resource) * 60))
        seconds = timings.seconds.get((resource.type, resource.name))
        if seconds is not None:
            row.measured_seconds.append(seconds)
    known = {(r.type, r.name) for r in kubernetes}
    return Comparison(
        table_minutes=critical_path(resources, kubernetes_only(minutes_of))[0],
        measured_minutes=round(critical_path(resources, kubernetes_only(measured_minutes))[0], 6),
        rows=sorted(rows.values(), key=lambda row: row.key),
        unmeasured=sorted(r.name for r in kubernetes if (r.type, r.name) not in timings.seconds),
        unmatched=sorted(name for typ, name in timings.seconds if (typ, name) not in known),
    )


def _names(names: Iterable[str], limit: int = 5) -> str:
    names = list(names)
    shown = ", ".join(f"`{name}`" for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def report_lines(timings: Timings | None, comparison: Comparison | None) -> list[str]:
    """The report's section on the measured Kubernetes part (Markdown lines)."""
    lines = ["## Kubernetes part, measured by `make e2e`", ""]
    if timings is None or comparison is None:
        return [*lines, f"{ABSENT} (it writes e2e/.out/timings.json).", ""]
    phases = ", ".join(f"{label} {timings.phases[key]:.1f} s" for key, label in PHASES if key in timings.phases)
    lines += [
        f"Stack `{timings.stack}`, {timings.clusters} clusters, Kubernetes {timings.kubernetes_version}, "
        f"simulated nodes (no image pulls, no load balancers: a lower bound for SKS). Phases: {phases}.",
        "",
        f"Kubernetes part of the critical path (every other resource at zero): table "
        f"{comparison.table_minutes:g} min, measured {comparison.measured_minutes:.2f} min.",
        "",
        "| table row | objects measured | table (s) | measured median (s) | measured max (s) |",
        "|:---|---:|---:|---:|---:|",
    ]
    for row in comparison.rows:
        measured = row.measured_seconds
        lines.append(
            f"| `{row.key}` | {len(measured)} | {row.table_seconds:g} | "
            + (f"{statistics.median(measured):.1f} | {max(measured):.1f} |" if measured else "- | - |")
        )
    lines.append("")
    if comparison.unmeasured:
        lines += [f"Not in the measurement (costed by the table): {_names(comparison.unmeasured)}.", ""]
    if comparison.unmatched:
        lines += [f"Measured but not in this revision's stack: {_names(comparison.unmatched)}.", ""]
    return lines


def engine_lines(out_dir: Path) -> list[str]:
    """The real Pulumi engine's wall time for `preview` and `up` at each N measured, beside the
    critical path from its own per-resource events: N=2 from `make e2e` (timings.json), larger N
    from `make bench-engine` (engine-scale-<N>.json). Reported, not gated."""
    rows: list[tuple[int, float, float, float, float]] = []
    e2e = out_dir / "timings.json"
    if e2e.is_file():
        document = json.loads(e2e.read_text())
        phases, paths = document.get("phases", {}), document.get("critical_paths", {})
        if "apply_seconds" in paths:
            rows.append((int(document["clusters"]), float(phases.get("preview_first_deploy_seconds", 0.0)),
                         float(phases["apply_seconds"]), float(paths["apply_seconds"]["seconds"]),
                         float(paths["apply_seconds"]["busy_seconds"])))
    for path in sorted(out_dir.glob("engine-scale-*.json")):
        document = json.loads(path.read_text())
        rows.append((int(document["clusters"]), float(document["preview_seconds"]), float(document["up_seconds"]),
                     float(document["critical_path_seconds"]), float(document["critical_path_busy_seconds"])))
    lines = ["## The real engine (make e2e at N=2, make bench-engine at larger N)", ""]
    if not rows:
        return [*lines, "no engine measurement: run make e2e (N=2) or make bench-engine N=8", ""]
    lines += ["| N | preview (s) | up (s) | critical path from engine events (s) | of which steps busy (s) |",
              "|---|---|---|---|---|"]
    lines += [f"| {n} | {p:.1f} | {u:.1f} | {c:.1f} | {b:.1f} |" for n, p, u, c, b in sorted(rows)]
    return [*lines, ""]
