"""Run the real program under the test mocks for N clusters and report how it scales.

    python -m bench.run [--runs K] [--sizes 2,4,8,16] [--output bench/RESULTS.md]

Per N (clusters c01..cNN, zones cycling through EXOSCALE_ZONES, one network each, every other
setting default): resources registered; program evaluation wall time, the median of K fresh
`run_program` calls after one warm-up call (the mocks generate real RSA-4096 keys, cached per
resource name and process: mock cost, paid in the warm-up); the CPU time the mocks' handlers took
inside those calls (thread CPU time, so threads waiting for the GIL add nothing); peak Python
memory of one more call (tracemalloc: Python allocations of every thread; memory that OpenSSL
allocates natively is not traced); and the deploy's critical path and serial sum in estimated
minutes (bench/graph.py). Prints a Markdown report, writes it to --output and exits 1 if a target
is missed.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.graph import (
    DURATION_NOTES,
    DURATIONS,
    OTHER_MINUTES,
    SECRET,
    critical_path,
    minutes_of,
    serial_minutes,
)
from components.config import EXOSCALE_ZONES
from testing.mocks import MeshMocks
from testing.program import run_program

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "bench" / "RESULTS.md"
DEFAULT_SIZES = (2, 4, 8, 16)
DEFAULT_RUNS = 5
MIB = 1024 * 1024

# Targets (the issue): the smallest and largest N the benchmark is meant for.
SMALL, LARGE = 2, 16
SMALL_MAX_SECONDS, LARGE_MAX_SECONDS = 1.0, 5.0
MIN_RATIO_PER_CLUSTER = 0.9  # serial/critical >= 0.9 * N (1.8 at N=2)
# Adding clusters may lengthen the critical path by at most one remote secret.
CRITICAL_TOLERANCE = DURATIONS.get(SECRET, OTHER_MINUTES)


def generated_config(clusters: int) -> dict[str, Any]:
    """Stack config for `clusters` clusters c01..cNN; everything but the cluster list is default."""
    return {"clusters": [
        {"name": f"c{i:02d}", "zone": EXOSCALE_ZONES[(i - 1) % len(EXOSCALE_ZONES)], "network": f"network-c{i:02d}"}
        for i in range(1, clusters + 1)
    ]}


class MockClock:
    """Adds up the CPU time spent in MeshMocks' handlers while active (instrumentation only: the
    handlers run unchanged). Thread CPU time, because the engine calls them from worker threads."""

    METHODS = ("new_resource", "call")

    def __init__(self) -> None:
        self.seconds = 0.0
        self.by_type: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._originals: dict[str, Callable[..., Any]] = {}

    def __enter__(self) -> MockClock:
        for name in self.METHODS:
            self._originals[name] = getattr(MeshMocks, name)
            setattr(MeshMocks, name, self._timed(self._originals[name]))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self._originals.items():
            setattr(MeshMocks, name, original)

    def _timed(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def timed(mocks: MeshMocks, args: Any) -> Any:
            start = time.thread_time()
            try:
                return original(mocks, args)
            finally:
                spent = time.thread_time() - start
                key = getattr(args, "typ", None) or getattr(args, "token", "?")
                with self._lock:
                    self.seconds += spent
                    self.by_type[key] += spent

        return timed


@dataclass
class Result:
    clusters: int
    resources: int
    wall_seconds: list[float]
    mock_seconds: list[float]
    peak_mib: float
    critical_minutes: float
    chain: list[Any]
    serial_minutes: float
    mock_by_type: Counter[str] = field(default_factory=Counter)

    @property
    def wall(self) -> float:
        return statistics.median(self.wall_seconds)

    @property
    def mock(self) -> float:
        return statistics.median(self.mock_seconds)

    @property
    def ratio(self) -> float:
        return self.serial_minutes / self.critical_minutes if self.critical_minutes else float("inf")


def measure(clusters: int, runs: int, log: Callable[[str], None]) -> Result:
    config = generated_config(clusters)
    log(f"N={clusters}: warm-up")
    recording = run_program(config)
    walls: list[float] = []
    mocks: list[float] = []
    by_type: Counter[str] = Counter()
    for run in range(runs):
        gc.collect()
        with MockClock() as clock:
            start = time.perf_counter()
            recording = run_program(config)
            walls.append(time.perf_counter() - start)
        mocks.append(clock.seconds)
        by_type.update(clock.by_type)
        log(f"N={clusters}: run {run + 1}/{runs} {walls[-1]:.3f} s (mock handlers {clock.seconds:.3f} s CPU)")
    gc.collect()
    tracemalloc.start()
    try:
        run_program(config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    minutes, chain = critical_path(recording.resources)
    return Result(
        clusters=clusters,
        resources=len(recording.resources),
        wall_seconds=walls,
        mock_seconds=mocks,
        peak_mib=peak / MIB,
        critical_minutes=minutes,
        chain=chain,
        serial_minutes=serial_minutes(recording.resources),
        mock_by_type=Counter({k: v / runs for k, v in by_type.items()}),
    )


@dataclass
class Target:
    description: str
    met: bool
    observed: str


def check_targets(results: Sequence[Result]) -> list[Target]:
    by_n = {r.clusters: r for r in results}
    targets: list[Target] = []
    if SMALL in by_n and LARGE in by_n:
        small, large = by_n[SMALL], by_n[LARGE]
        difference = abs(large.critical_minutes - small.critical_minutes)
        targets.append(Target(
            f"critical path at N={LARGE} equals N={SMALL} within one remote secret ({CRITICAL_TOLERANCE:g} min)",
            difference <= CRITICAL_TOLERANCE + 1e-9,
            f"{small.critical_minutes:g} vs {large.critical_minutes:g} min",
        ))
    for n in (SMALL, LARGE):
        if n in by_n:
            minimum = MIN_RATIO_PER_CLUSTER * n
            targets.append(Target(f"serial/critical >= {minimum:g} at N={n}", by_n[n].ratio >= minimum,
                                  f"{by_n[n].ratio:.2f}"))
    for n, limit in ((SMALL, SMALL_MAX_SECONDS), (LARGE, LARGE_MAX_SECONDS)):
        if n in by_n:
            targets.append(Target(f"program evaluation under mocks <= {limit:g} s at N={n}", by_n[n].wall <= limit,
                                  f"{by_n[n].wall:.2f} s"))
    return targets


def machine() -> dict[str, str]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("model name")), "")
    return {
        "nproc": str(cpus),
        "cpu": model or platform.processor() or "unknown",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def results_table(results: Sequence[Result]) -> list[str]:
    header = ("N", "resources", "eval wall, median (s)", "min-max (s)", "mock handlers CPU (s)",
              "wall - mock CPU (s)", "peak memory (MiB)", "critical path (resources)", "critical path (min)",
              "serial (min)", "serial/critical")
    rows = [(
        str(r.clusters), str(r.resources), f"{r.wall:.2f}", f"{min(r.wall_seconds):.2f}-{max(r.wall_seconds):.2f}",
        f"{r.mock:.2f}", f"{max(r.wall - r.mock, 0.0):.2f}", f"{r.peak_mib:.1f}", str(len(r.chain)),
        f"{r.critical_minutes:g}", f"{r.serial_minutes:g}", f"{r.ratio:.2f}",
    ) for r in results]
    return _table(header, rows, "lrrrrrrrrrr")


def report(results: Sequence[Result], targets: Sequence[Target], runs: int, host: dict[str, str]) -> str:
    lines = [
        "# Benchmark: the program under mocks, N clusters",
        "",
        "Written by `make bench` (`python -m bench.run`); the method is in `bench/run.py`'s docstring and",
        "the durations in `bench/graph.py`.",
        "",
        f"Machine: nproc {host['nproc']}, {host['cpu']}, {host['python']}, {host['platform']}. "
        f"Date: {host['date']}.",
        "",
        "## Results",
        "",
        f"Generated stacks: clusters `c01..cNN`, zones cycling through {len(EXOSCALE_ZONES)} Exoscale zones, "
        "one network each, every other setting default (demo and smoke test on).",
        f"Evaluation wall time: median of {runs} fresh `run_program` calls after a warm-up call (which "
        "generates the mocks' RSA keys). Mock handlers CPU: thread CPU time inside `MeshMocks` during those "
        "calls (median); the wall time includes it. Peak memory: tracemalloc peak of one more call (Python "
        "allocations only). Critical path: the longest chain of dependencies (dependencies, provider, parent) "
        "weighted by the duration table; serial: every resource one after the other.",
        "",
        *results_table(results),
        "",
        "## Targets",
        "",
        *_table(("target", "observed", "met"),
                [(t.description, t.observed, "yes" if t.met else "**no**") for t in targets], "lll"),
        "",
    ]
    if not targets:
        lines += ["(No target applies to the sizes measured: they are set for N=2 and N=16.)", ""]
    largest = max(results, key=lambda r: r.clusters)
    if largest.mock_by_type:
        top = largest.mock_by_type.most_common(4)
        lines += [
            f"Where the mock time goes at N={largest.clusters} (mock CPU seconds per program run, by resource type): "
            + ", ".join(f"`{typ}` {seconds:.2f}" for typ, seconds in top) + ".",
            "",
        ]
    smallest = min(results, key=lambda r: r.clusters)
    lines += [
        f"## Critical chain at N={smallest.clusters}",
        "",
        f"{smallest.critical_minutes:g} estimated minutes, {len(smallest.chain)} resources, first to last:",
        "",
        *(f"1. `{r.name}` ({r.type}, {minutes_of(r):g} min)" for r in smallest.chain),
        "",
        "## Duration table",
        "",
        *_table(("Pulumi type", "minutes", "basis"),
                [(f"`{typ}`", f"{minutes:g}", DURATION_NOTES.get(typ, "")) for typ, minutes in DURATIONS.items()]
                + [("any other custom resource", f"{OTHER_MINUTES:g}", "one API call or local provider work"),
                   ("component resources, other providers", "0", "no cloud work; what they wait for still counts")],
                "lrl"),
        "",
    ]
    return "\n".join(lines)


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated cluster counts, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("cluster counts must be 1 or more")
    return tuple(sorted(set(sizes)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="timed runs per N (default %(default)s)")
    parser.add_argument("--sizes", type=parse_sizes, default=DEFAULT_SIZES,
                        help="cluster counts, comma-separated (default 2,4,8,16)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="Markdown report to write (default bench/RESULTS.md)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be 1 or more")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results = [measure(n, args.runs, log) for n in args.sizes]
    targets = check_targets(results)
    text = report(results, targets, args.runs, machine())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    print(f"written to {args.output}", file=sys.stderr)
    missed = [t for t in targets if not t.met]
    for target in missed:
        print(f"target missed: {target.description} (observed {target.observed})", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
