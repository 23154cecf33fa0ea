"""Istio's own chart values and CRD schemas, read from the pinned charts themselves (fetched and
verified by testing/charts.py, never copied into the project)."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jsonschema
import pytest
import yaml

from testing.charts import ChartError, chart_file

# Values below these keys are free-form in the charts: meshConfig is Istio's MeshConfig API
# (checked by istiod, not by the chart) and annotation maps take any key.
FREE_FORM = ("meshConfig", "service.annotations")


# A chart fetch that failed is not retried by every test that needs the charts: each fails at once
# with the same one-line reason.
_FAILED: dict[str, str] = {}


def pinned_chart_file(version: str, chart: str, path: str) -> bytes:
    if version in _FAILED:
        pytest.fail(_FAILED[version], pytrace=False)
    try:
        return chart_file(version, chart, path)
    except ChartError as error:
        _FAILED[version] = f"Istio charts: {error}"
        pytest.fail(_FAILED[version], pytrace=False)


@cache
def chart_defaults(version: str, chart: str) -> dict[str, Any]:
    """A chart's documented values; since Istio 1.24 they sit under _internal_defaults_do_not_set
    but are set at the top level."""
    values = yaml.safe_load(pinned_chart_file(version, chart, "values.yaml"))
    return {**values.get("_internal_defaults_do_not_set", {}), **{k: v for k, v in values.items()
                                                                     if k != "_internal_defaults_do_not_set"}}


def unknown_value_keys(values: dict[str, Any], defaults: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys set by the program that the chart does not know (a typo is silently ignored by Helm)."""
    unknown = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in defaults:
            unknown.append(path)
        elif path in FREE_FORM:
            continue
        elif isinstance(value, dict) and isinstance(defaults[key], dict) and defaults[key]:
            unknown.extend(unknown_value_keys(value, defaults[key], f"{path}."))
    return unknown


@cache
def gateway_schema(version: str) -> dict[str, Any]:
    return json.loads(pinned_chart_file(version, "gateway", "values.schema.json"))


def validate_gateway_values(version: str, values: dict[str, Any]) -> None:
    # The schema names the draft-agnostic "http://json-schema.org/schema#"; Helm validates it as draft 7.
    jsonschema.Draft7Validator(gateway_schema(version)).validate(values)


@cache
def _crds(version: str) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    # The base chart carries every Istio CRD in files/crd-all.gen.yaml (templates/crds.yaml renders it).
    for document in yaml.safe_load_all(pinned_chart_file(version, "base", "files/crd-all.gen.yaml")):
        if document and document.get("kind") == "CustomResourceDefinition":
            spec = document["spec"]
            for served in spec["versions"]:
                key = (f"{spec['group']}/{served['name']}", spec["names"]["kind"])
                found[key] = served["schema"]["openAPIV3Schema"]
    return found


def validate_istio_object(version: str, manifest: dict[str, Any]) -> None:
    """Validate an Istio object against its CRD's OpenAPI schema (unknown fields rejected too,
    as the API server prunes them)."""
    key = (manifest["apiVersion"], manifest["kind"])
    schemas = _crds(version)
    assert key in schemas, f"{key} is not served by Istio {version}'s CRDs"
    jsonschema.validate({"spec": manifest["spec"]}, _closed(schemas[key]))


def _closed(schema: Any) -> Any:
    """Forbid properties a structural schema does not declare (what the API server prunes)."""
    if isinstance(schema, dict):
        closed = {k: _closed(v) for k, v in schema.items()}
        if closed.get("type") == "object" and "properties" in closed and "additionalProperties" not in closed \
                and not closed.get("x-kubernetes-preserve-unknown-fields"):
            closed["additionalProperties"] = False
        return closed
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def chart_template(version: str, chart: str, template: str) -> str:
    """One template of a pinned chart."""
    return pinned_chart_file(version, chart, f"templates/{template}").decode()


def with_chart_defaults(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The values a chart's templates see: the release's values merged over the chart's (Helm
    merges maps key by key and replaces everything else)."""
    merged = dict(defaults)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            merged[key] = with_chart_defaults(value, defaults[key])
        else:
            merged[key] = value
    return merged
