"""Runs the real program (__main__.py) under Pulumi mocks and records the resource graph.

Every registration is kept with its inputs (with Pulumi's secret markers), parent, provider,
dependencies and options, so tests and the benchmark look at what the engine would receive.
Only public SDK interfaces are used: `pulumi.runtime.set_mocks`/`test`, the MockMonitor's gRPC
methods and `get_registered_resources`, and the protobuf messages it receives.
"""

from __future__ import annotations

import contextvars
import json
import runpy
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
from testing.mocks import MeshMocks, unwrap

ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "__main__.py"
# Pulumi's wire format marks a secret as {SIG_KEY: SECRET_SIG, "value": ...} (the property-value
# signatures of pulumi/pulumi's resource protocol). The Python SDK keeps these names private, so
# they are restated here to find secret envelopes in the raw inputs.
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


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
    def __init__(self, mocks: MeshMocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registered] = []
        self.stack_urn = ""

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            self.stack_urn = response.urn
            return response
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
            provider_urn=request.provider.rsplit("::", 1)[0] if request.provider else "",
            dependencies=dependencies,
            inputs=unwrap(rpc.deserialize_properties(request.object)),
            wire_inputs=json_format.MessageToDict(request.object),
            custom=bool(request.custom),
            protect=bool(request.protect),
            deleted_with=request.deletedWith,
            additional_secret_outputs=list(request.additionalSecretOutputs),
            create_timeout=request.customTimeouts.create,
            outputs=registered.state if registered is not None else {},
        ))
        return response


def stack_config(stack: str) -> dict[str, Any]:
    """A stack file's `sks-istio-mesh:*` config, keys without the project prefix."""
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    return {k.removeprefix(f"{PROJECT}:"): v for k, v in document["config"].items() if k.startswith(f"{PROJECT}:")}


def _as_config_value(value: Any) -> str:
    # Pulumi hands the program strings; structured values as JSON, like the CLI does.
    return value if isinstance(value, str) else json.dumps(value)


def run_program(
    config: Mapping[str, Any], stack: str = "dev", secret_keys: tuple[str, ...] = (), preview: bool = False,
    other_config: Mapping[str, Any] | None = None,
) -> Recording:
    """Run __main__.py with `config` (keys without project prefix) and return what it registered.
    `other_config` holds fully qualified keys of other namespaces (`exoscale:...`)."""
    monitor = RecordingMonitor(MeshMocks())
    return contextvars.Context().run(_run, monitor, dict(config), stack, secret_keys, preview, other_config or {})


def run_failing_program(
    config: Mapping[str, Any], secret_keys: tuple[str, ...] = (), other_config: Mapping[str, Any] | None = None,
) -> tuple[Exception, list[Registered]]:
    """Run a program expected to fail; return the error and whatever it registered before."""
    monitor = RecordingMonitor(MeshMocks())
    try:
        contextvars.Context().run(_run, monitor, dict(config), "dev", secret_keys, False, other_config or {})
    except Exception as error:  # noqa: BLE001 - the error is the result
        return error, monitor.registrations
    raise AssertionError("the program was expected to fail but succeeded")


def _run(
    monitor: RecordingMonitor, config: dict[str, Any], stack: str, secret_keys: tuple[str, ...], preview: bool,
    other_config: Mapping[str, Any],
) -> Recording:
    pulumi.runtime.set_all_config(
        {**{f"{PROJECT}:{k}": _as_config_value(v) for k, v in config.items()},
         **{k: _as_config_value(v) for k, v in other_config.items()}},
        [f"{PROJECT}:{k}" for k in secret_keys],
    )
    pulumi.runtime.set_mocks(monitor.mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    outputs: dict[str, StackOutput] = {}

    def program() -> pulumi.Output[list[Any]]:
        runpy.run_path(str(MAIN), run_name="__main__")
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
    return Recording(monitor.registrations, outputs, monitor.stack_urn)


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
