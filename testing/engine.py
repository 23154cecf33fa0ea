"""What the Pulumi engine would do with each resource on the next `pulumi up`.

Mocks only record what the program registers; they never diff. This module replays the engine's
decision for one resource given its previous registration: `ignore_changes` keeps the old value,
`replace_on_changes` and the provider's own replace-on-change properties force a replacement, a
replaced provider replaces everything it manages, and a new URN is a create (plus a delete of the
old URN). The provider rules are the providers' own (cited to their sources), never this
project's reading of its own code; `make e2e` runs the same program on the real engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

SAME, UPDATE, REPLACE, CREATE, DELETE = "same", "update", "replace", "create", "delete"
# An update whose every changed property the provider neither replaces on nor sends on update:
# the preview shows a diff and `up` reports success, but nothing changes in the cloud.
IGNORED_UPDATE = "ignored-update"

# The TLS and Exoscale providers' rules have one copy: the schemas of the stand-in plugins that the
# real engine drives in `make e2e` (e2e/providers, each rule cited to terraform-provider-tls and
# terraform-provider-exoscale and unit-tested). An input whose change replaces the resource is
# REPLACE there; one that the provider neither replaces on nor sends on update (SKS `cni`,
# `serviceLevel`: "may only be set at creation time") is IGNORED.
# pulumi-kubernetes: a Provider is replaced only when clusterIdentifier changes (Provider docs,
# `cluster_identifier`); provider/pkg/provider/diff.go: every object on .metadata.name and
# .metadata.namespace, a Secret on .type, and on .data/.stringData too unless the provider sets
# enableSecretMutable. The real provider decides these in `make e2e`.
KUBERNETES_RULES: dict[str, tuple[str, ...]] = {
    "pulumi:providers:kubernetes": ("clusterIdentifier",),
    # pulumi-kubernetes provider/pkg/provider/diff.go (forceNew: batch/v1 Job, apps/v1 Deployment,
    # core/v1 Service) and helm_release.go (forceNewFields .name, .namespace).
    "kubernetes:batch/v1:Job": ("spec.completions", "spec.parallelism", "spec.selector", "spec.template"),
    "kubernetes:apps/v1:Deployment": ("spec.selector",),
    "kubernetes:core/v1:Service": ("spec.clusterIP",),
    "kubernetes:helm.sh/v3:Release": ("name", "namespace"),
}
KUBERNETES_REPLACE_ON_CHANGE = ("metadata.name", "metadata.namespace")
SECRET_TYPE = "kubernetes:core/v1:Secret"
SECRET_DATA = ("data", "stringData")


def _standin_rules() -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    from e2e.providers import exoscale, tls  # noqa: PLC0415 - test infrastructure, loaded once below
    from e2e.providers.base import Rule  # noqa: PLC0415

    replace: dict[str, tuple[str, ...]] = {}
    ignored: dict[str, tuple[str, ...]] = {}
    for provider in (exoscale.provider(), tls.provider()):
        for token, handler in provider.handlers.items():
            rules = handler.schema.inputs
            replace[token] = tuple(key for key, rule in rules.items() if rule is Rule.REPLACE)
            ignored[token] = tuple(key for key, rule in rules.items() if rule is Rule.IGNORED)
    return replace, ignored


_STANDIN_REPLACE, IGNORED_ON_UPDATE = _standin_rules()
REPLACE_ON_CHANGE: dict[str, tuple[str, ...]] = {**_STANDIN_REPLACE, **KUBERNETES_RULES}


def changed_paths(old: Any, new: Any, prefix: str = "") -> Iterator[str]:
    """Dotted paths of the leaves that differ (lists compare whole, like most provider diffs)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new), key=str):
            yield from changed_paths(old.get(key), new.get(key), f"{prefix}{key}.")
    elif old != new:
        yield prefix.removesuffix(".")


def _covers(rule: str, path: str) -> bool:
    return path == rule or path.startswith(rule + ".") or rule.startswith(path + ".")


def apply_ignore_changes(old: Mapping[str, Any], new: Mapping[str, Any], ignored: Iterable[str]) -> dict[str, Any]:
    """The engine's goal inputs: each ignored (top-level or dotted) property keeps its old value."""
    result = json.loads(json.dumps(new))
    for path in ignored:
        keys = path.split(".")
        source: Any = old
        for key in keys:
            source = source.get(key) if isinstance(source, Mapping) else None
        target = result
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        if source is None:
            target.pop(keys[-1], None)
        else:
            target[keys[-1]] = source
    return result


def replace_on_change(typ: str, provider_inputs: Mapping[str, Any] | None) -> tuple[str, ...]:
    rules = REPLACE_ON_CHANGE.get(typ, ())
    if typ.startswith("kubernetes:"):
        rules = (*rules, *KUBERNETES_REPLACE_ON_CHANGE)
    if typ == SECRET_TYPE:
        mutable = str((provider_inputs or {}).get("enableSecretMutable", "false")).lower() == "true"
        rules = (*rules, "type", *(() if mutable else SECRET_DATA))
    return rules


def next_step(
    typ: str,
    old_inputs: Mapping[str, Any],
    goal_inputs: Mapping[str, Any],
    replace_on_changes: Iterable[str] = (),
    provider_replaced: bool = False,
    provider_inputs: Mapping[str, Any] | None = None,
) -> str:
    """The step for a resource whose URN exists in the state; goal_inputs already honour ignore_changes."""
    if provider_replaced:
        return REPLACE
    changed = list(changed_paths(old_inputs, goal_inputs))
    if not changed:
        return SAME
    rules = (*replace_on_change(typ, provider_inputs), *replace_on_changes)
    if "*" in rules or any(_covers(rule, path) for rule in rules for path in changed):
        return REPLACE
    ignored = IGNORED_ON_UPDATE.get(typ, ())
    if all(any(_covers(rule, path) for rule in ignored) for path in changed):
        return IGNORED_UPDATE
    return UPDATE
