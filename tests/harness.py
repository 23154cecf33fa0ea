"""Runs the real program (__main__.py) under Pulumi mocks and records the resource graph.

Every registration is kept with its inputs (with Pulumi's secret markers), parent, provider,
dependencies and options, so tests assert on what the engine would receive.
"""

from __future__ import annotations

import contextvars
import json
import logging
import runpy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes_validate
import pulumi
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.stack import run_pulumi_func, wait_for_rpcs
from pulumi.runtime.sync_await import _sync_await

from tests import engine
from tests.mocks import MeshMocks, stable_uuid, unwrap

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "__main__.py"
SHARED = ROOT.parent / "shared"
PROJECT = "sks-istio-mesh"
SECRET_SIG = rpc._special_secret_sig
SIG_KEY = rpc._special_sig_key


@dataclass
class Registered:
    type: str
    name: str
    urn: str
    id: str
    parent: str
    provider_urn: str
    dependencies: set[str]
    inputs: dict[str, Any]  # secrets unwrapped
    wire_inputs: dict[str, Any]  # as sent to the engine, secret envelopes included
    custom: bool
    protect: bool
    deleted_with: str
    additional_secret_outputs: list[str]
    create_timeout: str
    outputs: dict[str, Any] = field(default_factory=dict)
    ignore_changes: list[str] = field(default_factory=list)
    replace_on_changes: list[str] = field(default_factory=list)
    provider_ref: str = ""  # "<provider urn>::<provider id>": a new id means a replaced provider
    delete_before_replace: bool = False
    # What the engine does with it on this run (tests/engine.py): "create" on a first run.
    step: str = engine.CREATE

    @property
    def all_dependencies(self) -> set[str]:
        """What the engine orders this resource after (and deletes it before)."""
        deps = set(self.dependencies)
        if self.provider_urn:
            deps.add(self.provider_urn)
        return deps


@dataclass
class StackOutput:
    value: Any
    secret: bool


@dataclass
class Recording:
    resources: list[Registered]
    outputs: dict[str, StackOutput]
    # Resources of the previous run that this run no longer registers (the engine deletes them).
    deleted: list[Registered] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def steps(self) -> dict[str, str]:
        """Resource name -> what the engine does with it (tests/engine.py), deletes included."""
        steps = {r.name: r.step for r in self.resources if r.custom}
        for gone in (r for r in self.deleted if r.custom):
            steps[gone.name] = engine.REPLACE if gone.name in steps else engine.DELETE
        return steps

    def changed(self) -> dict[str, str]:
        """Only the resources the engine touches: name -> step."""
        return {name: step for name, step in self.steps().items() if step != engine.SAME}

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.type == typ]

    def named(self, name: str, typ: str | None = None) -> Registered:
        matches = [r for r in self.resources if r.name == name and (typ is None or r.type == typ)]
        assert len(matches) == 1, f"expected one resource named {name!r}, found {len(matches)}"
        return matches[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)

    def k8s_objects(self, kind: str) -> list[Registered]:
        return [r for r in self.resources if r.type.startswith("kubernetes:") and r.type.endswith(f":{kind}")]

    def cluster_of(self, resource: Registered) -> str:
        """The cluster a Kubernetes resource is deployed to, from its provider."""
        return self.by_urn(resource.provider_urn).name.removesuffix("-k8s")

    def depends_on(self, resource: Registered, other: Registered) -> bool:
        """True if `resource` transitively depends on `other` (so it is created after it and
        deleted before it)."""
        seen: set[str] = set()
        stack = list(resource.all_dependencies)
        while stack:
            urn = stack.pop()
            if urn == other.urn:
                return True
            if urn in seen:
                continue
            seen.add(urn)
            stack.extend(self.by_urn(urn).all_dependencies)
        return False


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """Records every registration; given the previous run's recording, it also plays the engine:
    each resource gets the step the engine would take, and keeps its old id and outputs unless it
    is replaced, so downstream inputs see what a real second `pulumi up` would give them."""

    def __init__(self, mocks: MeshMocks, previous: Recording | None = None) -> None:
        super().__init__(mocks)
        self.registrations: list[Registered] = []
        self.previous = {r.urn: r for r in previous.resources} if previous else None
        self.provider_inputs: dict[str, dict[str, Any]] = {}

    def RegisterResource(self, request: Any) -> Any:
        if request.type == "pulumi:pulumi:Stack":
            return super().RegisterResource(request)
        urn = self.make_urn(request.parent, request.type, request.name)
        inputs = unwrap(rpc.deserialize_properties(request.object))
        provider_urn = request.provider.rsplit("::", 1)[0] if request.provider else ""
        old = self.previous.get(urn) if self.previous is not None else None
        step, goal, resource_id = engine.CREATE, inputs, ""
        if old is not None:
            goal = engine.apply_ignore_changes(old.inputs, inputs, request.ignoreChanges)
            step = engine.next_step(
                request.type, old.inputs, goal, request.replaceOnChanges,
                provider_replaced=bool(old.provider_ref) and old.provider_ref != request.provider,
                provider_inputs=self.provider_inputs.get(provider_urn),
            )
            resource_id = stable_uuid(old.id, "replacement") if step == engine.REPLACE else old.id
        args = pulumi_mocks.MockResourceArgs(
            typ=request.type, name=request.name, inputs=goal, provider=request.provider,
            resource_id=resource_id, custom=bool(request.custom),
        )
        new_id, state = self.mocks.new_resource(args)
        if old is not None and step == engine.SAME:
            state = old.outputs
        if request.type.startswith("pulumi:providers:"):
            self.provider_inputs[urn] = inputs
        self.resources[urn] = pulumi_mocks.MockMonitor.ResourceRegistration(urn, new_id, state)
        response = resource_pb2.RegisterResourceResponse(
            urn=urn, id=new_id, object=_sync_await(rpc.serialize_properties(state, {}))
        )
        dependencies = set(request.dependencies)
        for deps in request.propertyDependencies.values():
            dependencies.update(deps.urns)
        self.registrations.append(Registered(
            type=request.type,
            name=request.name,
            urn=urn,
            id=new_id,
            parent=request.parent,
            provider_urn=provider_urn,
            dependencies=dependencies,
            inputs=inputs,
            wire_inputs=json_format.MessageToDict(request.object),
            custom=bool(request.custom),
            protect=bool(request.protect),
            deleted_with=request.deletedWith,
            additional_secret_outputs=list(request.additionalSecretOutputs),
            create_timeout=request.customTimeouts.create,
            outputs=state,
            ignore_changes=list(request.ignoreChanges),
            replace_on_changes=list(request.replaceOnChanges),
            provider_ref=request.provider,
            delete_before_replace=bool(request.deleteBeforeReplace),
            step=step,
        ))
        return response


def stack_config(stack: str) -> dict[str, Any]:
    """A stack file's `sks-istio-mesh:*` config, keys without the project prefix."""
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    return {k.removeprefix(f"{PROJECT}:"): v for k, v in document["config"].items() if k.startswith(f"{PROJECT}:")}


def cluster_config(*names_and_zones: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"name": n, "zone": z, "network": f"{n}-net"} for n, z in names_and_zones]


def _as_config_value(value: Any) -> str:
    # Pulumi hands the program strings; structured values as JSON, like the CLI does.
    return value if isinstance(value, str) else json.dumps(value)


def run_program(
    config: Mapping[str, Any],
    stack: str = "dev",
    secret_keys: tuple[str, ...] = (),
    preview: bool = False,
    previous: Recording | None = None,
    mocks: MeshMocks | None = None,
) -> Recording:
    """Run __main__.py with `config` (keys without project prefix) and return what it registered.

    With `previous` (an earlier run's recording, as the stack's state), the run is the next
    `pulumi up`: every resource carries the engine's step and `deleted` lists what goes away."""
    monitor = RecordingMonitor(mocks or MeshMocks(), previous)
    recording = contextvars.Context().run(_run, monitor, dict(config), stack, secret_keys, preview)
    if previous is not None:
        registered = {r.urn for r in recording.resources}
        recording.deleted = [r for r in previous.resources if r.urn not in registered or
                             recording.by_urn(r.urn).step == engine.REPLACE]
    return recording


def run_failing_program(
    config: Mapping[str, Any],
    secret_keys: tuple[str, ...] = (),
    mocks: MeshMocks | None = None,
    previous: Recording | None = None,
) -> tuple[Exception, list[Registered]]:
    """Run a program expected to fail; return the error and whatever it registered before."""
    monitor = RecordingMonitor(mocks or MeshMocks(), previous)
    error = contextvars.Context().run(_run_expecting_failure, monitor, dict(config), secret_keys)
    return error, monitor.registrations


def _run_expecting_failure(
    monitor: RecordingMonitor, config: dict[str, Any], secret_keys: tuple[str, ...]
) -> Exception:
    try:
        _run(monitor, config, "dev", secret_keys, False)
    except Exception as error:  # noqa: BLE001 - the error is the result
        # Pulumi stops at the first failed registration; the rest of the program is still queued
        # on the shared event loop, and the next run's wait for outstanding tasks would await it
        # and fail with this error. Let it finish here, failing as it may.
        manager = runtime_settings._get_rpc_manager()
        for _ in range(1000):
            manager.unhandled_exception = None
            try:
                _sync_await(wait_for_rpcs())
                break
            except Exception:  # noqa: BLE001 - the same failure, seen by another resource
                continue
        return error
    raise AssertionError("the program was expected to fail but succeeded")


def _run(
    monitor: RecordingMonitor, config: dict[str, Any], stack: str, secret_keys: tuple[str, ...], preview: bool
) -> Recording:
    pulumi.runtime.set_all_config(
        {f"{PROJECT}:{k}": _as_config_value(v) for k, v in config.items()},
        [f"{PROJECT}:{k}" for k in secret_keys],
    )
    warnings = _WarningCollector()
    logger = logging.getLogger(f"{PROJECT}.tests.{id(monitor)}")
    logger.propagate = False
    logger.addHandler(warnings)
    pulumi.runtime.set_mocks(
        monitor.mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor, logger=logger
    )
    _sync_await(run_pulumi_func(lambda: runpy.run_path(str(MAIN), run_name="__main__")))

    outputs: dict[str, StackOutput] = {}
    root = pulumi.runtime.settings.get_root_resource()
    for key, value in getattr(root, "outputs", {}).items():
        output = pulumi.Output.from_input(value)
        outputs[key] = StackOutput(_sync_await(output.future()), bool(_sync_await(output.is_secret())))
    return Recording(monitor.registrations, outputs, warnings=warnings.messages)


class _WarningCollector(logging.Handler):
    """What `pulumi.log.warn` shows the user, as the mock engine receives it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def plaintext_strings(wire: Any, inside_secret: bool = False) -> Iterator[str]:
    """Every string in a wire-format value that is not inside a secret envelope."""
    if isinstance(wire, dict):
        if wire.get(SIG_KEY) == SECRET_SIG:
            return
        for value in wire.values():
            yield from plaintext_strings(value, inside_secret)
    elif isinstance(wire, list):
        for value in wire:
            yield from plaintext_strings(value, inside_secret)
    elif isinstance(wire, str):
        yield wire


def shared_charts(version: str) -> Path:
    return SHARED / "istio-charts" / version


# SKS runs Kubernetes 1.33-1.35; validate against the middle one, strictly (unknown fields fail).
KUBERNETES_VERSION = "1.34.0"
MANIFEST_FIELDS = ("apiVersion", "kind", "metadata", "spec", "data", "stringData", "type")


def kubernetes_manifest(resource: Registered) -> dict[str, Any]:
    """The object pulumi-kubernetes would send to the API server."""
    return {k: resource.inputs[k] for k in MANIFEST_FIELDS if k in resource.inputs}


def validate_kubernetes(resource: Registered) -> None:
    kubernetes_validate.validate(kubernetes_manifest(resource), KUBERNETES_VERSION, strict=True)
