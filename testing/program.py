"""Runs the real program (__main__.py) under Pulumi mocks and records the resource graph.

Every registration is kept with its inputs (with Pulumi's secret markers), parent, provider,
dependencies and options, so tests and the benchmark look at what the engine would receive.
Given the previous run's recording (the stack's state), a run is the next `pulumi up`: each
resource carries the step the engine would take (testing/engine.py) and keeps its old id and
outputs unless replaced, so downstream inputs see what a real second `up` would give them.

Only public SDK interfaces are used: `pulumi.runtime.set_mocks`/`test`, the MockMonitor's gRPC
methods and `get_registered_resources`, and the protobuf messages it receives.
"""

from __future__ import annotations

import contextvars
import json
import logging
import runpy
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

from mesh_constants import PROJECT
from testing import engine
from testing.mocks import MeshMocks, stable_uuid, unwrap

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "__main__.py"
# Pulumi's wire format marks a secret as {SIG_KEY: SECRET_SIG, "value": ...} (the property-value
# signatures of pulumi/pulumi's resource protocol). The Python SDK keeps these names private, so
# they are restated here to find secret envelopes in the raw inputs.
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
STACK_REFERENCE = "pulumi:pulumi:StackReference"
# What pulumi.get_organization() returns on a file (or S3) backend.
ORGANIZATION = "organization"


def stack_reference_outputs(outputs: Mapping[str, StackOutput]) -> dict[str, Any]:
    """What the engine's StackReference read returns for a stack whose last deployment exported `outputs`
    (pulumi/pulumi pkg/resource/deploy/builtins.go: `outputs` and `secretOutputNames`)."""
    return {"outputs": {key: output.value for key, output in outputs.items() if output.value is not None},
            "secretOutputNames": sorted(key for key, output in outputs.items() if output.secret)}


def is_wire_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


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
    # What the engine does with it on this run (testing/engine.py): "create" on a first run.
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
    stack_urn: str = ""
    # Resources of the previous run that this run no longer registers (the engine deletes them).
    deleted: list[Registered] = field(default_factory=list)
    # What `pulumi.log.warn` showed the user.
    warnings: list[str] = field(default_factory=list)
    # Resources the program reads rather than manages (the StackReference to the last deployment).
    reads: list[Registered] = field(default_factory=list)

    def steps(self) -> dict[str, str]:
        """Resource name -> what the engine does with it (testing/engine.py), deletes included."""
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
        return next(r for r in (*self.resources, *self.reads) if r.urn == urn)

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


@dataclass(frozen=True)
class _Decision:
    """The engine's decision for the registration in progress on this thread."""

    goal_inputs: dict[str, Any]
    resource_id: str  # "" for a new resource: the mocks make one up
    kept_outputs: dict[str, Any] | None  # an unchanged resource keeps what the provider said before


class _EngineReplay(pulumi.runtime.Mocks):
    """Hands the mocks the engine's goal inputs and id, and keeps an unchanged resource's outputs.

    The SDK's MockMonitor.RegisterResource calls `new_resource` synchronously on the thread that
    registers, so the decision travels in a thread-local rather than in a private SDK hook."""

    def __init__(self, mocks: pulumi.runtime.Mocks, previous_outputs: Mapping[str, StackOutput]) -> None:
        self.mocks = mocks
        self.decision = threading.local()
        self.previous_outputs = previous_outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> Any:
        return self.mocks.call(args)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if args.typ == STACK_REFERENCE:
            # The stack's own last deployment: the previous run's exports (none for a new stack).
            return args.resource_id, {"name": args.resource_id, **stack_reference_outputs(self.previous_outputs)}
        decision: _Decision | None = getattr(self.decision, "current", None)
        if decision is None:
            return self.mocks.new_resource(args)
        args.inputs, args.resource_id = decision.goal_inputs, decision.resource_id
        resource_id, outputs = self.mocks.new_resource(args)
        return resource_id, outputs if decision.kept_outputs is None else decision.kept_outputs


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """Records every registration; with the previous run's recording it also plays the engine."""

    def __init__(self, mocks: MeshMocks, previous: Recording | None = None) -> None:
        self.replay = _EngineReplay(mocks, previous.outputs if previous else {})
        super().__init__(self.replay)
        self.registrations: list[Registered] = []
        self.reads: list[Registered] = []
        self.stack_urn = ""
        self.previous = {r.urn: r for r in previous.resources} if previous else {}
        self.provider_inputs: dict[str, dict[str, Any]] = {}

    def RegisterResource(self, request: Any) -> Any:
        if request.type == "pulumi:pulumi:Stack":
            response = super().RegisterResource(request)
            self.stack_urn = response.urn
            return response
        urn = self.make_urn(request.parent, request.type, request.name)
        inputs = unwrap(rpc.deserialize_properties(request.object))
        provider_urn = request.provider.rsplit("::", 1)[0] if request.provider else ""
        old = self.previous.get(urn)
        step, goal = engine.CREATE, inputs
        if old is not None:
            goal = engine.apply_ignore_changes(old.inputs, inputs, request.ignoreChanges)
            step = engine.next_step(
                request.type, old.inputs, goal, request.replaceOnChanges,
                provider_replaced=bool(old.provider_ref) and old.provider_ref != request.provider,
                provider_inputs=self.provider_inputs.get(provider_urn),
            )
        self.replay.decision.current = None if old is None else _Decision(
            goal_inputs=goal,
            resource_id=stable_uuid(old.id, "replacement") if step == engine.REPLACE else old.id,
            kept_outputs=old.outputs if step == engine.SAME else None,
        )
        try:
            response = super().RegisterResource(request)
        finally:
            self.replay.decision.current = None
        if request.type.startswith("pulumi:providers:"):
            self.provider_inputs[urn] = inputs
        dependencies = set(request.dependencies)
        for deps in request.propertyDependencies.values():
            dependencies.update(deps.urns)
        registered = self.get_registered_resources().get(response.urn)
        self.registrations.append(Registered(
            type=request.type,
            name=request.name,
            urn=response.urn,
            id=response.id,
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
            outputs=registered.state if registered is not None else {},
            ignore_changes=list(request.ignoreChanges),
            replace_on_changes=list(request.replaceOnChanges),
            provider_ref=request.provider,
            delete_before_replace=bool(request.deleteBeforeReplace),
            step=step,
        ))
        return response

    def ReadResource(self, request: Any) -> Any:
        response = super().ReadResource(request)
        self.reads.append(Registered(
            type=request.type, name=request.name, urn=response.urn, id=request.id, parent=request.parent,
            provider_urn="", dependencies=set(request.dependencies), inputs={}, wire_inputs={}, custom=True,
            protect=False, deleted_with="", additional_secret_outputs=[], create_timeout="",
            outputs=unwrap(rpc.deserialize_properties(response.properties)), step=engine.SAME,
        ))
        return response


class _WarningCollector(logging.Handler):
    """What `pulumi.log.warn` shows the user, as the mock engine receives it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def stack_config(stack: str) -> dict[str, Any]:
    """A stack file's `sks-istio-mesh:*` config, keys without the project prefix."""
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    return {k.removeprefix(f"{PROJECT}:"): v for k, v in document["config"].items() if k.startswith(f"{PROJECT}:")}


def _as_config_value(value: Any) -> str:
    # Pulumi hands the program strings; structured values as JSON, like the CLI does.
    return value if isinstance(value, str) else json.dumps(value)


def run_program(
    config: Mapping[str, Any], stack: str = "dev", secret_keys: tuple[str, ...] = (), preview: bool = False,
    other_config: Mapping[str, Any] | None = None, previous: Recording | None = None, mocks: MeshMocks | None = None,
) -> Recording:
    """Run __main__.py with `config` (keys without project prefix) and return what it registered.
    `other_config` holds fully qualified keys of other namespaces (`exoscale:...`). With `previous`
    (an earlier run's recording, as the stack's state) the run is the next `pulumi up`: every
    resource carries the engine's step and `deleted` lists what goes away."""
    monitor = RecordingMonitor(mocks or MeshMocks(), previous)
    recording = contextvars.Context().run(
        _run, monitor, dict(config), stack, secret_keys, preview, other_config or {})
    if previous is not None:
        registered = {r.urn: r for r in recording.resources}
        recording.deleted = [r for r in previous.resources
                             if r.urn not in registered or registered[r.urn].step == engine.REPLACE]
    return recording


def run_failing_program(
    config: Mapping[str, Any], secret_keys: tuple[str, ...] = (), other_config: Mapping[str, Any] | None = None,
    mocks: MeshMocks | None = None, previous: Recording | None = None,
) -> tuple[Exception, list[Registered]]:
    """Run a program expected to fail; return the error and whatever it registered before."""
    monitor = RecordingMonitor(mocks or MeshMocks(), previous)
    try:
        contextvars.Context().run(_run, monitor, dict(config), "dev", secret_keys, False, other_config or {})
    except Exception as error:  # noqa: BLE001 - the error is the result
        return error, monitor.registrations
    raise AssertionError("the program was expected to fail but succeeded")


def _run(
    monitor: RecordingMonitor, config: dict[str, Any], stack: str, secret_keys: tuple[str, ...], preview: bool,
    other_config: Mapping[str, Any],
) -> Recording:
    warnings = _WarningCollector()
    logger = logging.getLogger(f"{PROJECT}.testing.{id(monitor)}")
    logger.propagate = False
    logger.addHandler(warnings)
    outputs = run_main(monitor, config, stack, secret_keys=secret_keys, preview=preview, other_config=other_config,
                       logger=logger)
    return Recording(monitor.registrations, outputs, monitor.stack_urn, warnings=warnings.messages, reads=monitor.reads)


def run_main(
    monitor: pulumi_mocks.MockMonitor, config: Mapping[str, Any], stack: str, *, secret_keys: tuple[str, ...] = (),
    preview: bool = False, other_config: Mapping[str, Any] | None = None, logger: logging.Logger | None = None,
) -> dict[str, StackOutput]:
    """Run __main__.py with `config` (keys without the project prefix) against `monitor`, in the
    current context; return the stack's exports. The offline runner and the e2e twin both use it."""
    pulumi.runtime.set_all_config(
        {**{f"{PROJECT}:{k}": _as_config_value(v) for k, v in config.items()},
         **{k: _as_config_value(v) for k, v in (other_config or {}).items()}},
        [f"{PROJECT}:{k}" for k in secret_keys],
    )
    pulumi.runtime.set_mocks(monitor.mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor,
                             logger=logger, organization=ORGANIZATION)
    outputs: dict[str, StackOutput] = {}

    def program() -> pulumi.Output[list[Any]]:
        runpy.run_path(str(MAIN), run_name="__main__")
        # The stack's exports: the SDK has no public way to read them back under mocks.
        exported = pulumi.runtime.get_root_resource().outputs
        outputs.update({key: StackOutput(None, False) for key in exported})
        return pulumi.Output.all(*(
            part
            for key, value in exported.items()
            for part in (
                pulumi.Output.from_input(value).apply(lambda v, key=key: setattr(outputs[key], "value", v)),
                pulumi.Output.from_input(pulumi.Output.from_input(value).is_secret()).apply(
                    lambda s, key=key: setattr(outputs[key], "secret", s)
                ),
            )
        ))

    # pulumi.runtime.test runs the function inside a stack and waits for the Output it returns.
    pulumi.runtime.test(program)()
    return outputs


def plaintext_strings(wire: Any) -> Iterator[str]:
    """Every string in a wire-format value that is not inside a secret envelope."""
    if is_wire_secret(wire):
        return
    if isinstance(wire, dict):
        for value in wire.values():
            yield from plaintext_strings(value)
    elif isinstance(wire, list):
        for value in wire:
            yield from plaintext_strings(value)
    elif isinstance(wire, str):
        yield wire
