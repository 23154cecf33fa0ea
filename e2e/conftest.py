"""The dev stack deployed by the real Pulumi engine onto real control planes, once per `make e2e`
session.

Tests run in file order (test_1_* ... test_5_*): deploy; istiod and the effects of the Istio
settings; re-runs and day 2; a third cluster, the ingress weights and the root rotation; teardown.
Every process is stopped when the session ends, fails or is interrupted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from e2e.controlplane import BIN, KUBERNETES_VERSION  # noqa: E402
from e2e.engine import engine_versions  # noqa: E402
from e2e.istiod import istio_module_version  # noqa: E402
from e2e.session import OUT, Mesh, Phases, SessionCannotStartError, mesh_session  # noqa: E402
from testing.charts import ChartError, ensure_charts  # noqa: E402
from testing.program import stack_config  # noqa: E402

ISTIO_TOOLS = ("pilot-discovery", "xds-probe", "ca-client", "istioctl")


def require_tools(tools: tuple[str, ...]) -> None:
    missing = [tool for tool in tools if not (BIN / tool).exists()]
    if missing:
        pytest.fail(f"e2e tools missing from e2e/.bin: {', '.join(missing)}; run `make e2e`, which builds them")


PHASES = Phases()
INTERRUPTED: list[bool] = []


def pytest_keyboard_interrupt(excinfo: Any) -> None:
    """Runs before the session's fixtures are torn down: an interrupted run keeps its logs too."""
    INTERRUPTED.append(True)


@pytest.fixture(scope="session")
def mesh(request: pytest.FixtureRequest) -> Iterator[Mesh]:
    config = stack_config("dev")
    try:
        charts = ensure_charts(config["istioVersion"])
    except ChartError as error:
        pytest.fail(str(error), pytrace=False)
    try:
        with mesh_session(config, charts, PHASES,
                          lambda: request.session.testsfailed > 0 or bool(INTERRUPTED)) as deployed:
            yield deployed
    except SessionCannotStartError as error:
        pytest.fail(str(error))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not PHASES.seconds:
        return
    terminalreporter.section("e2e versions")
    terminalreporter.write_line(f"Kubernetes control planes: {KUBERNETES_VERSION}")
    terminalreporter.write_line(f"Istio charts (pinned): {stack_config('dev')['istioVersion']}")
    terminalreporter.write_line(f"istiod (pilot-discovery): istio.io/istio {istio_module_version()}, the master "
                                "commit the Go module proxy serves (newer than the charts)")
    terminalreporter.write_line(f"Pulumi engine: {engine_versions()}")
    if PHASES.checkpoint_race_retries:
        terminalreporter.write_line(f"engine operations retried after the checkpoint race: "
                                    f"{PHASES.checkpoint_race_retries} (e2e/engine.py CHECKPOINT_RACE)")
    terminalreporter.section("e2e phase times")
    for phase, seconds in PHASES.seconds.items():
        terminalreporter.write_line(f"{phase.removesuffix('_seconds').replace('_', ' '):>28}: {seconds:6.1f} s")
    first = PHASES.runs.get("apply_seconds")
    resources = first.resource_seconds() if first else []
    helm = sum(s for t, _, s in resources if t == "kubernetes:helm.sh/v3:Release")
    terminalreporter.write_line(f"{'helm installs (sum)':>28}: {helm:6.1f} s")
    path = PHASES.critical_paths.get("apply_seconds")
    if path:
        terminalreporter.write_line(
            f"{'first up, critical path':>28}: {path.seconds:6.1f} s over {len(path.chain)} steps")
    OUT.mkdir(exist_ok=True)
    (OUT / "timings.json").write_text(json.dumps({
        "stack": "dev",
        "clusters": 2,
        "kubernetes_version": KUBERNETES_VERSION,
        "engine": engine_versions(),
        "phases": {**PHASES.seconds, "helm_seconds": helm},
        "critical_paths": {phase: {"seconds": round(p.seconds, 2), "busy_seconds": round(p.busy_seconds, 2),
                                   "chain": [f"{s.type}::{s.name}" for s in p.chain]}
                           for phase, p in PHASES.critical_paths.items()},
        "resources": [{"type": t, "name": n, "seconds": round(s, 2)} for t, n, s in resources],
    }, indent=1))
