import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from testing.program import Recording, run_program, stack_config  # noqa: E402


@pytest.fixture(scope="session")
def dev() -> Recording:
    """The dev stack (Pulumi.dev.yaml) as the engine would receive it."""
    return run_program(stack_config("dev"))


@pytest.fixture(scope="session")
def three_clusters() -> Recording:
    return run_program(three_cluster_config())


# A staged root rotation on three clusters, as the stack-config edits a user (and the e2e) makes,
# one `pulumi up` each (README: Certificates, rotating the root).
def rotation(phase: str, *switched: str) -> dict:
    return {"rootCaRotation": {"toGeneration": 2, "phase": phase, "switchedClusters": list(switched)}}


ROTATION_STEPS: tuple[tuple[str, dict], ...] = (
    ("trust", rotation("trust")),
    ("switch cluster1", rotation("switch", "cluster1")),
    ("switch cluster2", rotation("switch", "cluster1", "cluster2")),
    ("switch cluster3", rotation("switch", "cluster1", "cluster2", "cluster3")),
    ("finalize", rotation("finalize", "cluster1", "cluster2", "cluster3")),
    ("end", {"rootCaGeneration": 2}),
)


def three_cluster_config() -> dict:
    config = stack_config("dev")
    config["clusters"] = [*config["clusters"], {"name": "cluster3", "zone": "ch-gva-2", "network": "network3"}]
    return config


@pytest.fixture(scope="session")
def rotation_steps(three_clusters: Recording) -> dict[str, Recording]:
    """Each step's recording, the first (`before`) being the three-cluster stack on generation 1."""
    steps, previous = {"before": three_clusters}, three_clusters
    for name, edit in ROTATION_STEPS:
        previous = steps[name] = run_program({**three_cluster_config(), **edit}, previous=previous)
    return steps
