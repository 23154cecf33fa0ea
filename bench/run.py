"""Run the real program under the test mocks for N clusters and report how it scales.

    python -m bench.run [--runs K] [--sizes 2,3,8,16] [--update | --output FILE] [--e2e-timings FILE]

Per N (clusters c01..cNN, zones cycling through EXOSCALE_ZONES, one network each, every other
setting default): resources registered; program evaluation wall time, the median of K fresh
`run_program` calls after one warm-up call (the mocks generate real RSA-4096 keys, cached per
resource name and process: mock cost, paid in the warm-up), and the same as a multiple of a fixed
reference workload timed just before each call (fastest call over fastest reference), which stays
comparable between an idle and a busy machine where seconds do not; the CPU time the mocks'
handlers took inside those calls (thread CPU time, so threads waiting for the GIL add nothing);
peak Python memory of one more call (tracemalloc: Python allocations of every thread; memory that
OpenSSL allocates natively is not traced); and the deploy's critical path and serial sum in
estimated minutes (bench/graph.py). Then the Kubernetes part as `make e2e` measured it, if it has
run (bench/measured.py).

Prints a Markdown report and writes it to an untracked file (bench/.out/RESULTS.md), or with
--update to the committed bench/RESULTS.md. Exits 1 if a target on the dependency graph is missed;
seconds are reported, never gated on.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
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
from bench.measured import compare, engine_lines, read_timings
from bench.measured import report_lines as measured_report_lines
from components.config import EXOSCALE_ZONES
from testing.mocks import MeshMocks
from testing.program import run_program, stack_config

ROOT = Path(__file__).resolve().parent.parent
COMMITTED_OUTPUT = ROOT / "bench" / "RESULTS.md"
DEFAULT_OUTPUT = ROOT / "bench" / ".out" / "RESULTS.md"  # git-ignored
E2E_TIMINGS = ROOT / "e2e" / ".out" / "timings.json"  # written by `make e2e`, git-ignored
DEFAULT_SIZES = (2, 3, 8, 16)
DEFAULT_RUNS = 5
MIB = 1024 * 1024

# Targets on the dependency graph (deterministic, so they gate). Issue 15: serial/critical >= 2.5
# with two clusters; the benchmark's first issue: >= 0.9 N at N=16.
SMALL, LARGE = 2, 16
MIN_RATIO = {SMALL: 2.5, LARGE: 0.9 * LARGE}
# Adding clusters may lengthen the critical path by at most one remote secret.
CRITICAL_TOLERANCE = DURATIONS.get(SECRET, OTHER_MINUTES)
# The reference workload's size: about 0.1 s of one idle core.
REFERENCE_TASKS = 200
REFERENCE_REPEATS = 3  # per program call; the fastest counts


def generated_config(clusters: int) -> dict[str, Any]:
    """Stack config for `clusters` clusters c01..cNN with the demo on, as in the dev stack (its smoke
    test ends the deploy's critical path); everything else default."""
    return {
        "clusters": [
            {"name": f"c{i:02d}", "zone": EXOSCALE_ZONES[(i - 1) % len(EXOSCALE_ZONES)], "network": f"network-c{i:02d}"}
            for i in range(1, clusters + 1)
        ],
        "demoEnabled": True,
    }


def reference_workload(tasks: int = REFERENCE_TASKS) -> int:
    """Fixed pure-Python work of the kinds the evaluation does (nested dicts, strings, JSON round
    trips, asyncio tasks), independent of the program so that a change to the program shows."""

    async def resource(index: int) -> int:
        inputs = {f"key{k}": [k, f"value-{index}-{k}", {"nested": k}] for k in range(40)}
        await asyncio.sleep(0)
        return len(json.dumps(json.loads(json.dumps({"name": f"r{index}", "inputs": inputs}))))

    async def program() -> int:
        return sum(await asyncio.gather(*(resource(i) for i in range(tasks))))

    # A loop of its own, left unset: asyncio.run would unset the loop that Pulumi's mocks use.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(program())
    finally:
        loop.close()


def timed(work: Callable[[], Any]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


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
    reference_seconds: list[float]
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
    def reference_ratio(self) -> float:
        """Evaluation time in reference workloads. Fastest over fastest: on a loaded machine the
        fastest run is the least disturbed one, of the program and of the reference alike."""
        return min(self.wall_seconds) / min(self.reference_seconds)

    @property
    def mock(self) -> float:
        return statistics.median(self.mock_seconds)

    @property
    def ratio(self) -> float:
        return self.serial_minutes / self.critical_minutes if self.critical_minutes else float("inf")


def measure(clusters: int, runs: int, log: Callable[[str], None]) -> Result:
    config = generated_config(clusters)
    log(f"N={clusters}: warm-up")
    reference_workload()
    recording = run_program(config)
    walls: list[float] = []
    references: list[float] = []
    mocks: list[float] = []
    by_type: Counter[str] = Counter()
    for run in range(runs):
        gc.collect()
        # Timed just before each program call, so both see the same load.
        references.append(min(timed(reference_workload) for _ in range(REFERENCE_REPEATS)))
        gc.collect()
        with MockClock() as clock:
            start = time.perf_counter()
            recording = run_program(config)
            walls.append(time.perf_counter() - start)
        mocks.append(clock.seconds)
        by_type.update(clock.by_type)
        log(f"N={clusters}: run {run + 1}/{runs} {walls[-1]:.3f} s, reference {references[-1]:.3f} s "
            f"(mock handlers {clock.seconds:.3f} s CPU)")
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
        reference_seconds=references,
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
    """Targets on the dependency graph only: evaluation seconds depend on the machine's load."""
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
    for n, minimum in MIN_RATIO.items():
        if n in by_n:
            targets.append(Target(f"serial/critical >= {minimum:g} at N={n}", by_n[n].ratio >= minimum,
                                  f"{by_n[n].ratio:.2f}"))
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
        # How busy the machine was: seconds in the report mean little without it.
        "load": f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "unknown",
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def results_table(results: Sequence[Result]) -> list[str]:
    header = ("N", "resources", "critical path (min)", "serial (min)", "serial/critical",
              "critical path (resources)", "eval / reference", "eval wall, median (s)", "min-max (s)",
              "mock handlers CPU (s)", "peak memory (MiB)")
    rows = [(
        str(r.clusters), str(r.resources), f"{r.critical_minutes:g}", f"{r.serial_minutes:g}", f"{r.ratio:.2f}",
        str(len(r.chain)), f"{r.reference_ratio:.1f}", f"{r.wall:.2f}",
        f"{min(r.wall_seconds):.2f}-{max(r.wall_seconds):.2f}", f"{r.mock:.2f}", f"{r.peak_mib:.1f}",
    ) for r in results]
    return _table(header, rows, "lrrrrrrrrrr")


def report(results: Sequence[Result], targets: Sequence[Target], runs: int, host: dict[str, str],
           measured: Sequence[str]) -> str:
    lines = [
        "# Benchmark: the program under mocks, N clusters",
        "",
        "Written by `make bench UPDATE=1` (`python -m bench.run --update`; without it, to the untracked",
        "bench/.out/RESULTS.md); the method is in `bench/run.py`'s docstring and the durations in",
        "`bench/graph.py`.",
        "",
        f"Machine: nproc {host['nproc']}, {host['cpu']}, {host['python']}, {host['platform']}. "
        f"Date: {host['date']}. Load average (1 min) at the start: {host['load']}.",
        "",
        "## Results",
        "",
        f"Generated stacks: clusters `c01..cNN`, zones cycling through {len(EXOSCALE_ZONES)} Exoscale zones, "
        "one network each, the demo and its smoke test on (`demoEnabled`), every other setting default.",
        f"Evaluation wall time: median of {runs} fresh `run_program` calls after a warm-up call (which "
        "generates the mocks' RSA keys); eval / reference: the fastest call over the fastest run of a "
        "fixed reference workload timed just before each call (`reference_workload`), comparable across "
        "machines and loads where seconds are not. Mock handlers CPU: thread CPU time inside `MeshMocks` during those "
        "calls (median); the wall time includes it. Peak memory: tracemalloc peak of one more call (Python "
        "allocations only). Critical path: the longest chain of dependencies (dependencies, provider, parent) "
        "weighted by the duration table; serial: every resource one after the other.",
        "",
        *results_table(results),
        "",
        "## Targets",
        "",
        "On the dependency graph only: evaluation seconds are reported above, not gated on.",
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
        *measured,
        "## Duration table",
        "",
        *_table(("Pulumi type (Helm chart)", "minutes", "basis"),
                [(f"`{typ}`", f"{minutes:g}", DURATION_NOTES.get(typ, "")) for typ, minutes in DURATIONS.items()]
                + [("any other custom resource", f"{OTHER_MINUTES:g}", "one API call or local provider work"),
                   ("component resources, other providers", "0", "no cloud work; what they wait for still counts")],
                "lrl"),
        "",
    ]
    return "\n".join(lines)


def measured_section(timings_path: Path) -> list[str]:
    """The Kubernetes part as `make e2e` measured it, on the graph of the stack it deployed."""
    timings = read_timings(timings_path)
    if timings is None:
        return measured_report_lines(None, None)
    return measured_report_lines(timings, compare(run_program(stack_config(timings.stack)).resources, timings))


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated cluster counts, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("cluster counts must be 1 or more")
    return tuple(sorted(set(sizes)))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="timed runs per N (default %(default)s)")
    parser.add_argument("--sizes", type=parse_sizes, default=DEFAULT_SIZES,
                        help="cluster counts, comma-separated (default 2,3,8,16)")
    destination = parser.add_mutually_exclusive_group()
    destination.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                             help="Markdown report to write (default bench/.out/RESULTS.md, untracked)")
    destination.add_argument("--update", dest="output", action="store_const", const=COMMITTED_OUTPUT,
                             help="write the committed bench/RESULTS.md instead")
    parser.add_argument("--e2e-timings", type=Path, default=E2E_TIMINGS,
                        help="timings written by `make e2e` (default e2e/.out/timings.json)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be 1 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results = [measure(n, args.runs, log) for n in args.sizes]
    targets = check_targets(results)
    measured = [*measured_section(args.e2e_timings), *engine_lines(args.e2e_timings.parent)]
    text = report(results, targets, args.runs, machine(), measured)
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
