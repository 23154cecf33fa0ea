"""The stack-file JSON Schema and README config table generated from the config models: in sync,
and they accept the stack files and reject what the program rejects."""

import json
import re

import jsonschema
import pytest
import yaml

from components.config_reference import SCHEMA_PATH, schema_text, stack_file_schema, table_rows
from testing.program import ROOT

STACK_FILES = sorted(ROOT.glob("Pulumi.*.yaml"))


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schema_is_the_one_the_models_generate():
    assert SCHEMA_PATH.read_text() == schema_text(), "run `make schema` and commit schema/stack-config.schema.json"


@pytest.mark.parametrize("stack_file", STACK_FILES, ids=lambda p: p.name)
def test_every_stack_file_names_the_schema_and_validates_against_it(stack_file):
    first_line = stack_file.read_text().splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first_line)
    assert match, f"{stack_file.name} must start with a yaml-language-server schema comment"
    assert (stack_file.parent / match[1]).resolve() == SCHEMA_PATH.resolve()
    errors = list(validator().iter_errors(yaml.safe_load(stack_file.read_text())))
    assert errors == []


@pytest.mark.parametrize(("key", "value"), [
    ("sks-istio-mesh:meshID", "mesh1"),
    ("sks-istio-msh:meshId", "mesh1"),
    ("sks-istio-mesh:clusters", [{"name": "c1", "zone": "mars-1"}]),
    ("sks-istio-mesh:clusters", [{"name": "c1", "zone": "de-fra-1", "nodePool": {"size": 3}}]),
    ("sks-istio-mesh:kubeconfigTtlSeconds", 60),
    ("sks-istio-mesh:rootCaKeyPem", "-----BEGIN PRIVATE KEY-----"),
])
def test_schema_rejects_what_the_program_rejects(key, value):
    stack = {"config": {"sks-istio-mesh:clusters": [{"name": "c1", "zone": "de-fra-1"}], key: value}}
    assert list(validator().iter_errors(stack)), f"{key}: {value!r} passed the schema"


def test_schema_accepts_values_as_pulumi_config_set_writes_them():
    stack = {"config": {"sks-istio-mesh:clusters": [{"name": "c1", "zone": "de-fra-1"}],
                        "sks-istio-mesh:kubeconfigTtlSeconds": "86400", "sks-istio-mesh:mtlsStrict": "false",
                        "sks-istio-mesh:rootCaKeyPem": {"secure": "v1:abc"}, "exoscale:key": "x"}}
    assert list(validator().iter_errors(stack)) == []


def test_every_key_of_the_schema_has_a_readme_row():
    keys = {k.removeprefix("sks-istio-mesh:") for k in stack_file_schema()["properties"]["config"]["properties"]}
    assert keys == {row[0] for row in table_rows() if "." not in row[0]}


def test_the_schema_requires_the_cluster_list():
    assert "sks-istio-mesh:clusters" in stack_file_schema()["properties"]["config"]["required"]


def test_readme_rows_state_the_limits_a_user_must_know():
    allowed = {row[0]: row[3] for row in table_rows()}
    assert ">= 3600" in allowed["kubeconfigTtlSeconds"]
    assert ">= 24 (h)" in allowed["rootCaValidityHours"] and ">= 24 (h)" in allowed["intermediateCaValidityHours"]
    assert "1-40 characters" in allowed["clusters[].name"] and "lowercase letters" in allowed["clusters[].name"]
