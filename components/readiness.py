"""Readiness signals: how a component lets others wait for one of its children without handing
the child itself out (components expose outputs, not child resources)."""

from __future__ import annotations

import pulumi

# What a `depends_on` entry waits for: resolves to nothing, but carries a resource as dependency.
Readiness = pulumi.Output[None]


def readiness_of(resource: pulumi.CustomResource) -> Readiness:
    """An Output for `depends_on` lists that waits for `resource` alone. The SDK adds the resources
    behind an Output to depends_on (and skips its value when it is None), so the waiting resource
    is created after `resource` and deleted before it, exactly as with the resource itself."""
    return resource.urn.apply(lambda _: None)
