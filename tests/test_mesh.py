"""The Mesh component: one root for every resource, and components that hand each other outputs
rather than their child resources."""

import ast
import importlib
import inspect
import textwrap
import typing
from collections.abc import Iterator

import pulumi
import pytest

from mesh_constants import MESH_TYPE, PROJECT
from testing.program import ROOT, Recording


def ancestors(recording: Recording, urn: str) -> Iterator[str]:
    parents = {r.urn: r.parent for r in recording.resources}
    while urn in parents:
        urn = parents[urn]
        yield urn


def test_one_mesh_root_holds_every_resource(dev):
    (mesh,) = dev.of_type(MESH_TYPE)
    assert mesh.parent == dev.stack_urn
    assert [r.name for r in dev.resources if r.parent == dev.stack_urn] == [mesh.name]
    for resource in dev.resources:
        if resource is not mesh:
            assert mesh.urn in ancestors(dev, resource.urn), resource.urn


def test_every_component_has_an_index_type_token_of_the_project(dev):
    components = {r.type for r in dev.resources if not r.custom}
    assert len(components) >= 7
    assert all(t.startswith(f"{PROJECT}:index:") for t in components), components


def component_classes() -> list[type[pulumi.ComponentResource]]:
    found = []
    for path in sorted((ROOT / "components").glob("*.py")):
        module = importlib.import_module(f"components.{path.stem}")
        found += [c for _, c in inspect.getmembers(module, inspect.isclass)
                  if issubclass(c, pulumi.ComponentResource) and c.__module__ == module.__name__]
    return found


def public_attributes_assigned(cls: type) -> set[str]:
    """`self.<name> = ...` in the class's methods, for names without a leading underscore."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    return {
        target.attr for node in ast.walk(tree) if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"
        and not target.attr.startswith("_")
    }


def types_in(hint: object) -> Iterator[object]:
    yield hint
    for argument in typing.get_args(hint):
        yield from types_in(argument)


@pytest.mark.parametrize("component", component_classes(), ids=lambda c: c.__name__)
def test_components_declare_what_they_expose_and_expose_no_child_resources(component):
    declared = inspect.get_annotations(component, eval_str=True)
    undeclared = public_attributes_assigned(component) - set(declared)
    assert not undeclared, f"{component.__name__} sets undeclared attributes {undeclared}"
    for attribute in public_attributes_assigned(component):
        children = [t for t in types_in(declared[attribute]) if isinstance(t, type)
                    and issubclass(t, pulumi.Resource) and not issubclass(t, pulumi.ProviderResource)]
        assert not children, f"{component.__name__}.{attribute} exposes resources {children}: expose outputs"


def test_the_attribute_check_sees_a_child_resource():
    class Leaky(pulumi.ComponentResource):
        release: pulumi.CustomResource

        def __init__(self) -> None:
            self.release = typing.cast(pulumi.CustomResource, None)

    hint = inspect.get_annotations(Leaky, eval_str=True)["release"]
    assert public_attributes_assigned(Leaky) == {"release"}
    assert any(isinstance(t, type) and issubclass(t, pulumi.Resource) for t in types_in(hint))
