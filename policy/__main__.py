"""The policy pack the Pulumi CLI runs for `--policy-pack policy`; the policies live in mesh_policies.py."""

import sys
from pathlib import Path

# The pack shares the program's names and type tokens (mesh_constants.py in the project root).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mesh_policies import POLICIES
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name="sks-istio-mesh-invariants",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=POLICIES,
)
