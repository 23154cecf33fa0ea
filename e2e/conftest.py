"""The dev stack deployed by the twin onto real control planes, once per `make e2e` session.

Tests run in file order (test_1_* ... test_5_*): deploy, istiod, re-runs and day 2, a third
cluster, teardown. Every process is stopped when the session ends, fails or is interrupted.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from e2e.controlplane import BIN, KUBERNETES_VERSION, PIDS, WORK, ControlPlane, kwok_stage_dir, reap_leftovers  # noqa: E402
from e2e.fake_exoscale import FakeExoscale  # noqa: E402
from e2e.istiod import istio_module_version  # noqa: E402
from e2e.twin import RunReport, Twin  # noqa: E402
from testing.program import stack_config  # noqa: E402

SHARED = ROOT.parent / "shared"
OUT = Path(__file__).resolve().parent / ".out"
CONTROL_PLANE_TOOLS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "helm")
ISTIO_TOOLS = ("pilot-discovery", "xds-probe", "ca-client", "istioctl")


def require_tools(tools: tuple[str, ...]) -> None:
    missing = [tool for tool in tools if not (BIN / tool).exists()]
    if missing:
        pytest.fail(f"e2e tools missing from e2e/.bin: {', '.join(missing)}; run `make e2e`, which builds them")


@dataclass
class Phases:
    """Wall time per phase, printed at the end and written for `make bench`."""

    seconds: dict[str, float] = field(default_factory=dict)
    resources: list[tuple[str, str, float]] = field(default_factory=list)

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds


PHASES = Phases()


@dataclass
class Mesh:
    """The deployed stack: its config, control planes, fake cloud, twin and the last run."""

    config: dict[str, Any]
    control_planes: dict[str, ControlPlane]
    cloud: FakeExoscale
    twin: Twin
    workdir: Path
    first_run: RunReport
    chart_repository: str
    stage_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def start_control_plane(self, name: str) -> ControlPlane:
        started = time.monotonic()
        control_plane = ControlPlane(name, self.workdir / name, self.stage_dir)
        self.control_planes[name] = control_plane
        control_plane.start()
        PHASES.add("control_planes_seconds", time.monotonic() - started)
        return control_plane

    def up(self, config: dict[str, Any], phase: str) -> RunReport:
        report = self.twin.up(config)
        self.config = config
        PHASES.add(phase, report.seconds)
        if phase == "apply_seconds":  # the dev stack's first deploy is what `make bench` compares
            PHASES.resources.extend(report.resource_seconds)
        return report


class _QuietChartHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Helm's downloads are not worth a line each in the test output."""


def _serve_charts(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietChartHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


INTERRUPTED: list[bool] = []


def pytest_keyboard_interrupt(excinfo: Any) -> None:
    """Runs before the session's fixtures are torn down: an interrupted run keeps its logs too."""
    INTERRUPTED.append(True)


def stop_all(stops: list[Any]) -> None:
    """Call every stop, also after one failed; then raise the first failure."""
    errors = []
    for stop in stops:
        try:
            stop()
        except Exception as error:  # noqa: BLE001 - re-raised below, after the others ran
            errors.append(error)
    if errors:
        raise errors[0]


def _keep_logs(workdir: Path) -> Path:
    """The logs of a failed run (control planes, Helm, istiod), kept under e2e/.out/."""
    kept = OUT / f"failed-run-{time.strftime('%Y%m%d-%H%M%S')}"
    for log in workdir.rglob("*.log"):
        (kept / log.relative_to(workdir)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(log, kept / log.relative_to(workdir))
    return kept


@pytest.fixture(scope="session")
def mesh(request: pytest.FixtureRequest) -> Iterator[Mesh]:
    require_tools(CONTROL_PLANE_TOOLS)
    config = stack_config("dev")
    charts = SHARED / "istio-charts" / config["istioVersion"] / "repo"
    if not charts.is_dir():
        pytest.fail(f"{charts} is missing: make e2e installs the pinned charts from ../shared")
    reaped = reap_leftovers()
    if reaped:
        print(f"e2e: killed {len(reaped)} processes a killed earlier run left behind")
    workdir = WORK / "run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    server, repository = _serve_charts(charts)
    config["istioChartRepository"] = repository
    control_planes: dict[str, ControlPlane] = {}
    cloud = FakeExoscale(control_planes)
    # SIGTERM (CI's timeout, a killed make) ends the session like Ctrl-C, so the finally runs.
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
    mesh = None
    failed = True
    try:
        stage_dir = kwok_stage_dir()
        mesh = Mesh(config, control_planes, cloud, Twin(workdir, cloud), workdir, RunReport({}), repository,
                    stage_dir)
        for cluster in config["clusters"]:
            mesh.start_control_plane(cluster["name"])
        mesh.first_run = mesh.up(config, "apply_seconds")
        yield mesh
        failed = request.session.testsfailed > 0 or bool(INTERRUPTED)
    finally:
        try:
            stops = [mesh.extra.get("stop_istiods") if mesh else None, cloud.stop,
                     *(control_plane.stop for control_plane in control_planes.values())]
            stop_all([stop for stop in stops if stop])
        finally:
            server.shutdown()
            server.server_close()
            signal.signal(signal.SIGTERM, previous_sigterm)
            if failed:
                print(f"e2e: logs of the failed run kept in {_keep_logs(workdir)}")
            shutil.rmtree(workdir, ignore_errors=True)
            reap_leftovers()  # all stopped by now; this clears their pid files
            shutil.rmtree(PIDS, ignore_errors=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not PHASES.seconds:
        return
    terminalreporter.section("e2e versions")
    terminalreporter.write_line(f"Kubernetes control planes: {KUBERNETES_VERSION}")
    terminalreporter.write_line(f"Istio charts (pinned): {stack_config('dev')['istioVersion']}")
    terminalreporter.write_line(f"istiod (pilot-discovery): istio.io/istio {istio_module_version()}, the master "
                                "commit the Go module proxy serves (newer than the charts)")
    terminalreporter.section("e2e phase times")
    for phase, seconds in PHASES.seconds.items():
        terminalreporter.write_line(f"{phase.removesuffix('_seconds').replace('_', ' '):>22}: {seconds:6.1f} s")
    helm = sum(s for t, _, s in PHASES.resources if t == "kubernetes:helm.sh/v3:Release")
    terminalreporter.write_line(f"{'helm installs (sum)':>22}: {helm:6.1f} s")
    OUT.mkdir(exist_ok=True)
    (OUT / "timings.json").write_text(json.dumps({
        "stack": "dev",
        "clusters": 2,
        "kubernetes_version": KUBERNETES_VERSION,
        "phases": {**PHASES.seconds, "helm_seconds": helm},
        "resources": [{"type": t, "name": n, "seconds": round(s, 2)} for t, n, s in PHASES.resources],
    }, indent=1))
