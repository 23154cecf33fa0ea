"""README claims checked against the code: commands, config keys, outputs, stacks, secrets."""

import re

import yaml

from components.config_reference import table_rows
from testing.program import ROOT, run_program, stack_config

README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def first_code_block() -> list[str]:
    match = re.search(r"```sh\n(.*?)```", README, re.S)
    assert match
    return [line.split("#")[0].strip() for line in match.group(1).splitlines() if line.strip()]


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z0-9-]*):", MAKEFILE, re.M))


def test_readme_opens_with_exactly_two_commands_deploy_and_test():
    assert README.index("```sh") < 40, "the commands come first"
    assert first_code_block() == ["make deploy STACK=dev", "make test"]


def test_ci_runs_the_readmes_test_commands():
    """The offline suite from the README's first lines, then the end-to-end run its Tests section
    documents."""
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.strip().startswith("#")]
    test_command = first_code_block()[1]
    assert "`make e2e`" in README
    assert test_command in commands and "make e2e" in commands
    assert commands.index(test_command) < commands.index("make e2e")


def test_every_make_command_in_the_readme_exists():
    used = set(re.findall(r"make ([a-z][a-z0-9-]*)", README))
    assert used and used <= make_targets(), used - make_targets()


def test_deploy_uses_a_local_file_backend_and_a_passphrase():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["backend"]["url"].startswith("file://")
    script = (ROOT / "scripts" / "pulumi-stack.sh").read_text()
    assert "PULUMI_CONFIG_PASSPHRASE" in script and "--secrets-provider passphrase" in script


def config_table() -> list[tuple[str, ...]]:
    rows = []
    for line in section("Configuration reference").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `"):
            rows.append((cells[0].strip("`"), *cells[1:]))
    return rows


def test_config_table_lists_every_key_with_its_type_default_and_allowed_values():
    # `make schema` prints the rows from the config models.
    assert config_table() == table_rows()


def test_outputs_table_names_the_programs_outputs(dev):
    documented = set(re.findall(r"^\| `([a-zA-Z]+)`", section("Outputs and the merged kubeconfig"), re.M))
    with_ingress = run_program({**stack_config("dev"), "demoIngressWeights": {"cluster2": 100}})
    assert documented == set(dev.outputs) | set(with_ingress.outputs)


def test_the_readmes_stacks_are_the_stack_files():
    documented = set(re.findall(r"^- `Pulumi\.([a-z0-9][a-z0-9-]*)\.yaml`", section("Stacks"), re.M))
    assert documented == {p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml")}


def test_ci_secrets_in_the_readme_are_the_ones_the_workflows_use():
    workflows = "".join(p.read_text() for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    used = set(re.findall(r"secrets\.([A-Z_]+)", workflows)) - {"GITHUB_TOKEN"}
    documented = set(re.findall(r"`([A-Z][A-Z_]+)`", section("CI: PR previews and deploys")))
    assert used == documented


def test_troubleshooting_cites_upstream_issues():
    assert len(re.findall(r"#\d{3,}", section("Troubleshooting"))) >= 10
