"""`make bench-engine`: the real Pulumi engine's wall time for `preview` and `up` of an N-cluster
stack on local control planes, beside the critical path computed from the engine's own
per-resource events (e2e/timing.py). Reported, not gated.

    python -m bench.engine_scale [--clusters 8]

Writes e2e/.out/engine-scale-<N>.json, which `make bench` prints beside the e2e's own N=2
numbers. What is real and what is not is the e2e's (README: End-to-end tests): the engine and the
Kubernetes provider are real, SKS and TLS are stand-ins, KWOK simulates nodes and pods.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from components.config import EXOSCALE_ZONES  # noqa: E402
from e2e.engine import OUT  # noqa: E402
from e2e.session import Phases, mesh_session  # noqa: E402
from testing.charts import ensure_charts  # noqa: E402
from testing.program import stack_config  # noqa: E402


def scaled_config(clusters: int) -> dict[str, Any]:
    """The dev stack with `clusters` clusters, one per zone, each on its own network."""
    if clusters > len(EXOSCALE_ZONES):
        raise SystemExit(f"at most {len(EXOSCALE_ZONES)} clusters: one per SKS zone")
    config = stack_config("dev")
    template = config["clusters"][0]
    config["clusters"] = [{**template, "name": f"cluster{i}", "zone": zone, "network": f"network{i}"}
                          for i, zone in enumerate(EXOSCALE_ZONES[:clusters], start=1)]
    return config


def measure(clusters: int, charts: Path) -> dict[str, Any]:
    phases = Phases()
    config = scaled_config(clusters)
    started = time.monotonic()
    with mesh_session(config, charts, phases) as mesh:
        deployed = time.monotonic() - started
        path = phases.critical_paths["apply_seconds"]
        teardown = mesh.engine.destroy()
        return {
            "clusters": clusters,
            "resources": len(mesh.first_run.steps),
            "preview_seconds": round(mesh.first_preview.seconds, 1),
            "up_seconds": round(mesh.first_run.seconds, 1),
            "control_planes_seconds": round(phases.seconds.get("control_planes_seconds", 0.0), 1),
            "critical_path_seconds": round(path.seconds, 1),
            "critical_path_busy_seconds": round(path.busy_seconds, 1),
            "critical_path": [f"{s.type}::{s.name} {s.ended - s.started:.1f}s" for s in path.chain
                              if s.ended is not None],
            "destroy_seconds": round(teardown.seconds, 1),
            "session_seconds": round(deployed, 1),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=8)
    args = parser.parse_args(argv)
    charts = ensure_charts(stack_config("dev")["istioVersion"])
    result = measure(args.clusters, charts)
    OUT.mkdir(exist_ok=True)
    path = OUT / f"engine-scale-{args.clusters}.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
