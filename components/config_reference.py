"""The config reference generated from the models in config.py: the JSON Schema of a stack file
(schema/stack-config.schema.json, for editors) and the rows of the README's config table.

    python -m components.config_reference     # `make schema`: writes the schema, prints the table
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from components.config import NESTED_MODELS, OTHER_NAMESPACES, MeshSettings
from mesh_constants import PROJECT

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "schema" / "stack-config.schema.json"
# The other namespaces a stack file's keys may use (providers' settings, pulumi:...).
OTHER_NAMESPACE_KEY = rf"^({'|'.join(OTHER_NAMESPACES)}):.+$"


def _fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every key a stack file can set, as the README writes it (`clusters[].nodepool.size`)."""
    for field in model.model_fields.values():
        key = f"{prefix}{field.alias}"
        nested = NESTED_MODELS.get(field.alias or "")
        if nested is None or prefix == "":
            yield key, field
        if nested is not None:
            yield from _fields(nested, f"{key}[]." if key == "clusters" else f"{key}.")


def config_keys() -> list[str]:
    return [key for key, _ in _fields(MeshSettings)]


def _is_secret(schema: dict[str, Any]) -> bool:
    """Pydantic marks a SecretStr field writeOnly."""
    return any(branch.get("writeOnly") for branch in schema.get("anyOf", [schema]))


def _type(schema: dict[str, Any]) -> str:
    # A nested model is a reference to its definition.
    types = {branch.get("type", "object" if "$ref" in branch else None)
             for branch in schema.get("anyOf", [schema])} - {"null"}
    (kind,) = types
    if _is_secret(schema):
        return "secret string"
    if kind == "array" and schema.get("items", {}).get("type") == "string":
        return "list of strings"
    return {"array": "list of objects", "object": "object"}.get(kind, kind)


# How the table shows a default that config.py computes from other keys, or generates.
COMPUTED_DEFAULTS = {
    "clusters[].network": "network-<name>",
    "clusters[].kubernetesVersion": "newest SKS version",
    "rootCaCertPem": "(generated)",
    "rootCaKeyPem": "(generated)",
    "rootCaRotation": "(no rotation)",
    "rootCaRotation.switchedClusters": "[]",
    "rootCaRotation.rootCaCertPem": "(generated)",
    "rootCaRotation.rootCaKeyPem": "(generated)",
    "demoServerCluster": "second cluster",
    "demoClientCluster": "first cluster",
    "demoIngressWeights": "{} (no ingress)",
}


def _default(key: str, field: FieldInfo) -> str:
    if key in COMPUTED_DEFAULTS:
        return COMPUTED_DEFAULTS[key]
    if field.is_required():
        return "(required)"
    return str(field.default).lower() if isinstance(field.default, bool) else str(field.default)


def table_rows() -> list[tuple[str, str, str, str]]:
    """(key, type, default, allowed) for every key, in the README's order."""
    schemas = {model: model.model_json_schema(by_alias=True) for model in (MeshSettings, *NESTED_MODELS.values())}
    rows = []
    for key, field in _fields(MeshSettings):
        owner = next(m for m in schemas if field in m.model_fields.values())
        schema = schemas[owner]["properties"][field.alias]
        rows.append((key, _type(schema), _default(key, field), str(field.description)))
    return rows


def _cli_strings(schema: dict[str, Any]) -> dict[str, Any]:
    """`pulumi config set` stores numbers and booleans as strings: accept both spellings."""
    kind = schema.get("type")
    if kind == "integer":
        return {**schema, "type": ["integer", "string"], "pattern": r"^-?\d+$"}
    if kind == "boolean":
        return {**schema, "type": ["boolean", "string"], "pattern": "^(true|false)$"}
    return schema


def _secret(schema: dict[str, Any]) -> dict[str, Any]:
    """In the stack file a secret is ciphertext: `{secure: v1:...}`."""
    return {
        "description": schema.get("description", ""),
        "type": "object",
        "properties": {"secure": {"type": "string"}},
        "required": ["secure"],
        "additionalProperties": False,
    }


def _secrets_as_ciphertext(definitions: dict[str, Any]) -> dict[str, Any]:
    """A nested secret (`pulumi config set --secret --path`) is ciphertext inside its object too."""
    return {
        name: {**definition, "properties": {
            key: _secret(schema) if _is_secret(schema) else schema
            for key, schema in definition.get("properties", {}).items()}}
        for name, definition in definitions.items()
    }


def stack_file_schema() -> dict[str, Any]:
    model = MeshSettings.model_json_schema(by_alias=True)
    config = {
        f"{PROJECT}:{key}": _secret(schema) if _is_secret(schema) else _cli_strings(schema)
        for key, schema in model["properties"].items()
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"Pulumi.<stack>.yaml of {PROJECT}",
        "description": "Generated from components/config.py by `make schema`; the README's config table lists "
                       "the same keys.",
        "type": "object",
        "properties": {
            "secretsprovider": {"type": "string"},
            "encryptedkey": {"type": "string"},
            "encryptionsalt": {"type": "string"},
            "environment": {},
            "config": {
                "type": "object",
                "properties": config,
                "required": [f"{PROJECT}:{key}" for key in model.get("required", [])],
                "patternProperties": {OTHER_NAMESPACE_KEY: {}},
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
        "$defs": _secrets_as_ciphertext(model.get("$defs", {})),
    }


def schema_text() -> str:
    return json.dumps(stack_file_schema(), indent=2) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.parent.mkdir(exist_ok=True)
    SCHEMA_PATH.write_text(schema_text())
    print(f"wrote {SCHEMA_PATH.relative_to(ROOT)}; the README's config table:\n")
    print("| key | type | default | allowed |\n|---|---|---|---|")
    for row in table_rows():
        print(f"| `{row[0]}` | " + " | ".join(row[1:]) + " |")
