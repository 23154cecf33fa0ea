"""What both stand-ins share: plain values to and from the engine's property values, a schema per
resource type (which input forces a replacement, which one the real provider updates in place,
which one it accepts and silently ignores after creation), and a provider that checks and diffs by
that schema and leaves create/read/update/delete to the resource's handler.

Diff semantics are those of a bridged Terraform provider: a changed input whose Terraform attribute
is `ForceNew` (SDKv2) or has a `RequiresReplace` plan modifier (plugin framework) makes the
resource replaced, create-first (`delete_before_replace` stays False: neither real provider asks
for delete-first; the program sets it where it needs it). An unknown new value of such an input
is a replacement too, as Terraform plans it ("known after apply" forces replacement).
"""

from __future__ import annotations

import abc
import enum
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pulumi.provider.experimental.property_value import Computed, PropertyValue
from pulumi.provider.experimental.provider import (
    CheckFailure,
    CheckRequest,
    CheckResponse,
    CreateRequest,
    CreateResponse,
    DeleteRequest,
    DiffRequest,
    DiffResponse,
    PropertyDiff,
    PropertyDiffKind,
    Provider,
    ReadRequest,
    ReadResponse,
    UpdateRequest,
    UpdateResponse,
)
from pulumi.provider.experimental.server import main
from pulumi.runtime.rpc import UNKNOWN as UNKNOWN_SENTINEL


class _Unknown:
    """A value the engine does not know yet (preview): the wire's unknown sentinel string."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


def plain(value: PropertyValue) -> Any:
    """The Python value of a property value: secretness dropped (see `secret_keys`), numbers that
    are whole as int, unknowns as UNKNOWN."""
    inner = value.value
    if isinstance(inner, Computed) or inner == UNKNOWN_SENTINEL:
        return UNKNOWN
    if isinstance(inner, bool) or inner is None or isinstance(inner, str):
        return inner
    if isinstance(inner, float):
        return int(inner) if inner.is_integer() else inner
    if isinstance(inner, Mapping):
        return {key: plain(item) for key, item in inner.items()}
    if isinstance(inner, tuple | list):
        return [plain(item) for item in inner]
    raise TypeError(f"the stand-in providers do not take {type(inner).__name__} values")


def plain_map(values: Mapping[str, PropertyValue]) -> dict[str, Any]:
    return {key: plain(item) for key, item in values.items()}


def secret_keys(values: Mapping[str, PropertyValue]) -> set[str]:
    return {key for key, item in values.items() if item.contains_secret()}


def to_property(value: Any, secret: bool = False) -> PropertyValue:
    if value is UNKNOWN:
        result = PropertyValue(UNKNOWN_SENTINEL)
    elif value is None or isinstance(value, bool | str):
        result = PropertyValue(value)
    elif isinstance(value, int | float):
        result = PropertyValue(float(value))
    elif isinstance(value, Mapping):
        result = PropertyValue({key: to_property(item) for key, item in value.items()})
    elif isinstance(value, list | tuple):
        result = PropertyValue([to_property(item) for item in value])
    else:
        raise TypeError(f"cannot send a {type(value).__name__} to the engine")
    return result.with_secret(True) if secret else result


def to_properties(values: Mapping[str, Any], secrets: set[str] | frozenset[str]) -> dict[str, PropertyValue]:
    return {key: to_property(item, key in secrets) for key, item in values.items()}


class Rule(enum.Enum):
    REPLACE = "replace"  # Terraform ForceNew / RequiresReplace
    UPDATE = "update"  # the resource's Update applies it (a HasChange branch)
    # Neither: the real provider accepts a new value, Update does not send it, and Read puts the
    # cloud's value back, so the diff shows an update that changes nothing.
    IGNORED = "ignored"


@dataclass(frozen=True)
class Schema:
    token: str
    # Every input the SDK sends (camelCase wire name) -> what a change of it does.
    inputs: dict[str, Rule]
    # Outputs the provider computes (unknown in a preview of a create).
    computed: frozenset[str] = frozenset()
    defaults: dict[str, Any] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    # Inputs that are Terraform sets: order does not matter.
    sets: frozenset[str] = frozenset()
    # Optional + Computed attributes: left out, the provider's value in the state stands (no diff).
    optional_computed: frozenset[str] = frozenset()
    # The SDK's additional_secret_outputs, also marked secret in our responses.
    secret_outputs: frozenset[str] = frozenset()
    # Allowed values of an input, checked like the provider's validators.
    choices: dict[str, tuple[Any, ...]] = field(default_factory=dict)


def _normal(value: Any, is_set: bool) -> Any:
    # Terraform does not tell an empty list or map from an absent one.
    if value in (None, [], {}, ""):
        return None
    if is_set and isinstance(value, list):
        return sorted(value, key=repr)
    return value


def property_diffs(schema: Schema, olds: Mapping[str, Any], news: Mapping[str, Any],
                   ignore: frozenset[str] = frozenset()) -> dict[str, PropertyDiff]:
    """Per-input differences between the old state and the new inputs, with the replace kinds."""
    diffs: dict[str, PropertyDiff] = {}
    for key, rule in schema.inputs.items():
        if key in ignore:
            continue
        old, new = olds.get(key), news.get(key)
        if key in schema.optional_computed and new is None:
            continue
        if new is not UNKNOWN and _normal(old, key in schema.sets) == _normal(new, key in schema.sets):
            continue
        replace = rule is Rule.REPLACE
        if _normal(old, False) is None:
            kind = PropertyDiffKind.ADD_REPLACE if replace else PropertyDiffKind.ADD
        elif _normal(new, False) is None:
            kind = PropertyDiffKind.DELETE_REPLACE if replace else PropertyDiffKind.DELETE
        else:
            kind = PropertyDiffKind.UPDATE_REPLACE if replace else PropertyDiffKind.UPDATE
        diffs[key] = PropertyDiff(kind, input_diff=True)
    return diffs


REPLACE_KINDS = {PropertyDiffKind.ADD_REPLACE, PropertyDiffKind.DELETE_REPLACE, PropertyDiffKind.UPDATE_REPLACE}


class Handler(abc.ABC):
    """Create, read, update and delete of one resource type; plain values in and out."""

    schema: Schema

    @abc.abstractmethod
    def create(self, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The new resource's id and state."""

    def update(self, resource_id: str, olds: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        """`changes`: the new values of the inputs whose rule is UPDATE and that changed."""
        return {**olds, **changes}

    def delete(self, resource_id: str, state: dict[str, Any]) -> None:
        return None

    def read(self, resource_id: str, state: dict[str, Any]) -> dict[str, Any] | None:
        """The live state, or None when the resource is gone."""
        return state

    def replace_reasons(self, olds: dict[str, Any], news: dict[str, Any]) -> dict[str, Any]:
        """Computed outputs that force a replacement now (e.g. a certificate due for renewal),
        with their planned new value."""
        return {}


class StandInProvider(Provider):
    def __init__(self, handlers: list[Handler]) -> None:
        self.handlers = {handler.schema.token: handler for handler in handlers}

    def handler(self, qualified_type: str) -> Handler:
        # A URN's type is qualified by its parents' types (`parent$child`); the SDK's request.type
        # returns that whole qualified type, and the resource's own token is its last part.
        type_token = qualified_type.rsplit("$", 1)[-1]
        try:
            return self.handlers[type_token]
        except KeyError:
            raise ValueError(f"this stand-in provider does not implement {type_token}") from None

    async def check(self, request: CheckRequest) -> CheckResponse:
        schema = self.handler(request.type).schema
        news = {key: value for key, value in plain_map(request.new_inputs).items() if value is not None}
        secrets = secret_keys(request.new_inputs)
        failures = [CheckFailure(key, f"{key} is required") for key in sorted(schema.required) if key not in news]
        for key, allowed in schema.choices.items():
            value = news.get(key)
            if value is not None and value is not UNKNOWN and value not in allowed:
                allowed_text = ", ".join(map(str, allowed))
                failures.append(CheckFailure(key, f"{key} must be one of {allowed_text}, not {value!r}"))
        unknown = sorted(set(news) - set(schema.inputs))
        failures.extend(CheckFailure(key, f"{key} is not an input of {schema.token}") for key in unknown)
        checked = {**{k: v for k, v in schema.defaults.items() if k not in news}, **news}
        return CheckResponse(inputs=to_properties(checked, secrets), failures=failures or None)

    async def diff(self, request: DiffRequest) -> DiffResponse:
        handler = self.handler(request.type)
        olds, news = plain_map(request.old_state), plain_map(request.new_inputs)
        # The engine applies ignoreChanges to the new inputs itself before Check; honouring the
        # top-level names here too keeps a direct Diff call consistent with it.
        detailed = property_diffs(handler.schema, olds, news, frozenset(request.ignore_changes))
        for key in handler.replace_reasons(olds, news):
            detailed[key] = PropertyDiff(PropertyDiffKind.UPDATE_REPLACE, input_diff=False)
        replaces = sorted(key for key, diff in detailed.items() if diff.kind in REPLACE_KINDS)
        return DiffResponse(changes=bool(detailed), replaces=replaces, diffs=sorted(detailed),
                            detailed_diff=detailed, delete_before_replace=False)

    def _secrets(self, schema: Schema, *inputs: Mapping[str, PropertyValue]) -> set[str]:
        return set(schema.secret_outputs).union(*(secret_keys(values) for values in inputs))

    async def create(self, request: CreateRequest) -> CreateResponse:
        handler = self.handler(request.type)
        inputs = plain_map(request.properties)
        secrets = self._secrets(handler.schema, request.properties)
        if request.preview:
            planned = {**dict.fromkeys(handler.schema.computed, UNKNOWN), **inputs}
            return CreateResponse(resource_id="", properties=to_properties(planned, secrets))
        resource_id, outputs = handler.create(inputs)
        return CreateResponse(resource_id=resource_id, properties=to_properties(outputs, secrets))

    async def update(self, request: UpdateRequest) -> UpdateResponse:
        handler = self.handler(request.type)
        olds, news = plain_map(request.olds), plain_map(request.news)
        secrets = self._secrets(handler.schema, request.olds, request.news)
        changed = property_diffs(handler.schema, olds, news, frozenset(request.ignore_changes))
        changes = {key: news.get(key) for key in changed if handler.schema.inputs[key] is Rule.UPDATE}
        if request.preview:
            return UpdateResponse(properties=to_properties({**olds, **changes}, secrets))
        outputs = handler.update(request.resource_id, olds, changes)
        return UpdateResponse(properties=to_properties(outputs, secrets))

    async def delete(self, request: DeleteRequest) -> None:
        handler = self.handler(request.type)
        handler.delete(request.resource_id, plain_map(request.properties))

    async def read(self, request: ReadRequest) -> ReadResponse:
        handler = self.handler(request.type)
        state = handler.read(request.resource_id, plain_map(request.properties))
        if state is None:
            return ReadResponse(resource_id="", properties={}, inputs={})
        secrets = self._secrets(handler.schema, request.properties)
        return ReadResponse(resource_id=request.resource_id, properties=to_properties(state, secrets),
                            inputs=request.inputs)


def serve(version: str, make_provider: Callable[[], Provider]) -> None:
    """The plugin's main: a gRPC server the engine talks to (it prints its port on stdout)."""
    main(sys.argv[1:], version, make_provider())
