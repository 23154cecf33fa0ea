"""The policy pack the Pulumi CLI runs for `--policy-pack policy`; the policies live in mesh_policies.py."""

from mesh_policies import POLICIES
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name="sks-istio-mesh-invariants",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=POLICIES,
)
