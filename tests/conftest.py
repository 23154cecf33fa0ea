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
    config = stack_config("dev")
    config["clusters"] = [*config["clusters"], {"name": "cluster3", "zone": "ch-gva-2", "network": "network3"}]
    return run_program(config)
