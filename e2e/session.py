"""One deployed mesh on local control planes, driven by the real engine: what `make e2e`'s
session fixture and `make bench-engine` share.

The control planes, the fake Exoscale API with its cloud controller, the chart server and the
engine's workspace all live for one session and are stopped when it ends, fails or is
interrupted (SIGTERM ends it like Ctrl-C, and the previous handler is restored).
"""

from __future__ import annotations

import fcntl
import functools
import http.server
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.controlplane import BIN, PIDS, WORK, ControlPlane, kwok_stage_dir, reap_leftovers
from e2e.engine import ROOT, Engine, RunReport, engine_path
from e2e.fake_exoscale import FakeExoscale
from e2e.timing import CriticalPath, critical_path

OUT = Path(__file__).resolve().parent / ".out"
CONTROL_PLANE_TOOLS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "helm")
ENGINE_TOOLS = ("pulumi", "pulumi-resource-kubernetes")


class SessionCannotStartError(RuntimeError):
    """Missing tools, or another run holds the work directory: one line says which."""
    pass


def require_tools(tools: tuple[str, ...]) -> None:
    missing = [tool for tool in tools if not (BIN / tool).exists()]
    if missing:
        raise SessionCannotStartError(f"e2e tools missing from e2e/.bin: {', '.join(missing)}; run `make e2e`, "
                                "which builds them")


@dataclass
class Phases:
    """Wall time per phase, printed at the end and written for `make bench`."""

    seconds: dict[str, float] = field(default_factory=dict)
    runs: dict[str, RunReport] = field(default_factory=dict)
    critical_paths: dict[str, CriticalPath] = field(default_factory=dict)
    # Engine operations retried once after the file backend's checkpoint race (e2e/engine.py).
    checkpoint_race_retries: int = 0

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds


@dataclass
class Mesh:
    """The deployed stack: its config, control planes, fake cloud, engine and the last run."""

    config: dict[str, Any]
    control_planes: dict[str, ControlPlane]
    cloud: FakeExoscale
    engine: Engine
    workdir: Path
    first_preview: RunReport
    first_run: RunReport
    chart_repository: str
    stage_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)
    phases: Phases = field(default_factory=Phases)

    def start_control_plane(self, name: str) -> ControlPlane:
        started = time.monotonic()
        control_plane = ControlPlane(name, self.workdir / name, self.stage_dir)
        self.control_planes[name] = control_plane
        control_plane.start()
        self.phases.add("control_planes_seconds", time.monotonic() - started)
        return control_plane

    def preview(self, config: dict[str, Any], scenario: str) -> RunReport:
        report = self.engine.preview(config, scenario)
        self.phases.checkpoint_race_retries = self.engine.checkpoint_race_retries
        self.phases.add(f"preview_{scenario.replace('-', '_')}_seconds", report.seconds)
        return report

    def up(self, config: dict[str, Any], phase: str) -> RunReport:
        report = self.engine.up(config)
        self.phases.checkpoint_race_retries = self.engine.checkpoint_race_retries
        self.config = config
        self.phases.add(phase, report.seconds)
        if phase not in self.phases.runs:
            self.phases.runs[phase] = report
            self.phases.critical_paths[phase] = critical_path(report, self.engine.resources())
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


def stop_all(stops: list[Callable[[], Any]]) -> None:
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
    """The logs of a failed run (control planes, engine, istiod), kept under e2e/.out/."""
    kept = OUT / f"failed-run-{time.strftime('%Y%m%d-%H%M%S')}"
    for log in workdir.rglob("*.log"):
        (kept / log.relative_to(workdir)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(log, kept / log.relative_to(workdir))
    return kept


@contextmanager
def mesh_session(config: dict[str, Any], charts: Path, phases: Phases,
                 failed: Callable[[], bool] = lambda: False) -> Iterator[Mesh]:
    """Control planes for every cluster of `config`, then its first `pulumi preview` and `up`.
    Everything runs under the fixed e2e/.work/run, after killing what a killed earlier run left
    (pid files in e2e/.work/pids); the logs are kept in e2e/.out/ when the session raised or
    `failed()` says so at the end."""
    require_tools(CONTROL_PLANE_TOOLS + ENGINE_TOOLS)
    WORK.mkdir(parents=True, exist_ok=True)
    lock = (WORK / "lock").open("w")
    try:
        # One run at a time: the work directory and its pid files are shared, and a second run
        # would kill the first one's processes as leftovers.
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise SessionCannotStartError(
            "another make e2e or make bench-engine is running here (e2e/.work/lock)") from None
    with lock:
        yield from _session(config, charts, phases, failed)


def _session(config: dict[str, Any], charts: Path, phases: Phases, failed: Callable[[], bool]) -> Iterator[Mesh]:
    reaped = reap_leftovers()
    if reaped:
        print(f"e2e: killed {len(reaped)} processes a killed earlier run left behind")
    workdir = WORK / "run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    server, repository = _serve_charts(charts)
    config = {**config, "istioChartRepository": repository}
    control_planes: dict[str, ControlPlane] = {}
    cloud = FakeExoscale(control_planes)
    previous_sigterm = signal.signal(signal.SIGTERM, _interrupt)
    mesh = None
    raised = True
    try:
        cloud_url = cloud.serve()
        engine = Engine(workdir, {
            "PATH": engine_path(),
            "SKS_E2E_PYTHON": sys.executable,
            "PYTHONPATH": str(ROOT),
            "EXOSCALE_API_ENDPOINT": cloud_url,
            # The stand-in checks that credentials are configured, as the real provider does.
            "EXOSCALE_API_KEY": "EXOe2e00000000000000000000",
            "EXOSCALE_API_SECRET": "e2e-secret",
        })
        mesh = Mesh(config, control_planes, cloud, engine, workdir, RunReport("preview"), RunReport("up"),
                    repository, kwok_stage_dir(), phases=phases)
        for cluster in config["clusters"]:
            mesh.start_control_plane(cluster["name"])
        mesh.first_preview = mesh.preview(config, "first-deploy")
        mesh.first_run = mesh.up(config, "apply_seconds")
        yield mesh
        raised = False
    finally:
        try:
            stops = [mesh.extra.get("stop_istiods") if mesh else None, cloud.close,
                     *(control_plane.stop for control_plane in control_planes.values())]
            stop_all([stop for stop in stops if stop])
        finally:
            server.shutdown()
            server.server_close()
            signal.signal(signal.SIGTERM, previous_sigterm)
            if raised or failed():
                print(f"e2e: logs of the failed run kept in {_keep_logs(workdir)}")
            shutil.rmtree(workdir, ignore_errors=True)
            reap_leftovers()  # all stopped by now; this clears their pid files
            shutil.rmtree(PIDS, ignore_errors=True)
