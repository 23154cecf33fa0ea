"""The GitHub workflows: actionlint-clean, and wired as the README's CI section describes.

pull_request.yml runs the README's test command and its end-to-end command (Go and the built e2e
tools cached by the tool modules), then a `pulumi preview` with the policy pack per stack,
commented on the PR; push.yml (main) runs the tests, `pulumi up` on dev, then on prod behind
the `production` environment. Both install their own dependencies (pulumi/actions installs none)
and log in to the SOS bucket named by the PULUMI_BACKEND_URL secret.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
PULL_REQUEST = WORKFLOWS / "pull_request.yml"
PUSH = WORKFLOWS / "push.yml"
ALL_WORKFLOWS = (PULL_REQUEST, PUSH)

TEST_COMMAND = "make test"  # the README's test command
PYTHON_VERSION = "3.11"
PULUMI_ACTION = "pulumi/actions"
PULUMI_ACTION_MAJOR = "v7"
POLICY_PACK = "policy"
INSTALL_COMMANDS = ("python -m venv venv", "venv/bin/pip install -r requirements-dev.txt")

# The repository secrets the README tells you to create.
DOCUMENTED_SECRETS = frozenset({
    "PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "EXOSCALE_API_KEY", "EXOSCALE_API_SECRET",
    "SOS_ACCESS_KEY", "SOS_SECRET_KEY",
})
AUTOMATIC_SECRETS = frozenset({"GITHUB_TOKEN"})  # created by GitHub for every run

# What every pulumi step must find in its environment: variable -> repository secret.
PULUMI_STEP_ENV = {
    "PULUMI_BACKEND_URL": "PULUMI_BACKEND_URL",  # wins over Pulumi.yaml's file:// backend
    "PULUMI_CONFIG_PASSPHRASE": "PULUMI_CONFIG_PASSPHRASE",
    "EXOSCALE_API_KEY": "EXOSCALE_API_KEY",
    "EXOSCALE_API_SECRET": "EXOSCALE_API_SECRET",
    "AWS_ACCESS_KEY_ID": "SOS_ACCESS_KEY",  # Exoscale IAM key with SOS rights
    "AWS_SECRET_ACCESS_KEY": "SOS_SECRET_KEY",
}

# Inputs of pulumi/actions' action.yml. actionlint checks them up to v6 only, so a misspelt
# input (`policy-packs`) would otherwise be ignored silently by the action.
PULUMI_ACTION_INPUTS = frozenset({
    "always-include-summary", "cloud-url", "color", "command", "comment-on-pr", "comment-on-pr-number",
    "comment-on-summary", "config-map", "continue-on-error", "debug", "diff", "edit-pr-comment", "exclude",
    "exclude-dependents", "exclude-protected", "expect-no-changes", "github-token", "log-flow",
    "log-verbosity", "message", "parallel", "plan", "policyPackConfigs", "policyPacks", "pulumi-version",
    "pulumi-version-file", "refresh", "remove", "replace", "secrets-provider", "stack-name",
    "suppress-outputs", "suppress-progress", "target", "target-dependents", "upsert", "work-dir",
})

SECRET_REFERENCE = re.compile(r"""secrets\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_-]*)|\[\s*['"]([^'"]+)['"]\s*\])""")


# --- reading the workflows ------------------------------------------------------------------------

@cache
def load(path: Path) -> dict[str, Any]:
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    return yaml.safe_load(path.read_text())


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the bare key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return on or {}


def jobs(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return workflow.get("jobs") or {}


def action_of(step: dict[str, Any]) -> tuple[str, str] | None:
    uses = step.get("uses")
    if not uses or "@" not in uses:
        return None
    name, ref = uses.split("@", 1)
    return name, ref


def uses(step: dict[str, Any], action: str) -> bool:
    found = action_of(step)
    return found is not None and found[0] == action


def pulumi_steps(workflow: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for job_id, job in jobs(workflow).items():
        for step in job.get("steps") or []:
            if uses(step, PULUMI_ACTION):
                yield job_id, job, step


def pulumi_jobs(workflow: dict[str, Any], command: str) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    return {job_id: (job, step) for job_id, job, step in pulumi_steps(workflow)
            if step.get("with", {}).get("command") == command}


def stacks_of(job: dict[str, Any], step: dict[str, Any]) -> list[str]:
    name = str(step.get("with", {}).get("stack-name", ""))
    if re.fullmatch(r"\$\{\{\s*matrix\.stack\s*\}\}", name):
        return list(job.get("strategy", {}).get("matrix", {}).get("stack") or [])
    return [name]


def needs(job: dict[str, Any]) -> list[str]:
    found = job.get("needs") or []
    return [found] if isinstance(found, str) else list(found)


def all_needs(workflow: dict[str, Any], job_id: str) -> set[str]:
    seen: set[str] = set()
    pending = needs(jobs(workflow)[job_id])
    while pending:
        current = pending.pop()
        if current not in seen:
            seen.add(current)
            pending.extend(needs(jobs(workflow)[current]))
    return seen


def environment_of(job: dict[str, Any]) -> str | None:
    environment = job.get("environment")
    return environment.get("name") if isinstance(environment, dict) else environment


def is_secret(value: Any, secret: str) -> bool:
    pattern = r"\$\{\{\s*secrets\." + re.escape(secret) + r"\s*\}\}"
    return isinstance(value, str) and re.fullmatch(pattern, value) is not None


def is_true(value: Any) -> bool:
    return value is True or value == "true"


def step_env(workflow: dict[str, Any], job: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    return {**(workflow.get("env") or {}), **(job.get("env") or {}), **(step.get("env") or {})}


def stacks_from_files() -> list[str]:
    """One stack per Pulumi.<stack>.yaml beside Pulumi.yaml."""
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in ROOT.glob("Pulumi.*.yaml"))


def pinned_version(requirements: Path, package: str) -> str:
    for line in requirements.read_text().splitlines():
        found = re.fullmatch(rf"\s*{re.escape(package)}\s*==\s*([^\s;#]+).*", line)
        if found:
            return found.group(1)
    raise AssertionError(f"{package} is not pinned with == in {requirements.name}")


# --- the tests --------------------------------------------------------------------------------------

def test_workflows_pass_actionlint():
    actionlint = shutil.which("actionlint")
    if actionlint is None:
        pytest.fail("actionlint is not on PATH: run the tests with `make test`, which installs it into venv/bin "
                    "with `go install` (needs Go: https://go.dev/dl/) and puts venv/bin on PATH")
    result = subprocess.run([actionlint, "-no-color", *map(str, ALL_WORKFLOWS)], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"actionlint found problems:\n{result.stdout}{result.stderr}"


def test_every_pulumi_action_use_is_major_v7():
    found = [(path.name, job_id, action_of(step)[1]) for path in ALL_WORKFLOWS
             for job_id, _, step in pulumi_steps(load(path))]
    assert len(found) >= 3, f"expected a preview and two ups, found {found}"
    stale = [(name, job_id, ref) for name, job_id, ref in found
             if ref != PULUMI_ACTION_MAJOR and not ref.startswith(f"{PULUMI_ACTION_MAJOR}.")]
    assert not stale, f"pulumi/actions must be {PULUMI_ACTION_MAJOR}: {stale}"


def test_pulumi_action_gets_only_inputs_it_knows():
    unknown = {(path.name, job_id, key) for path in ALL_WORKFLOWS for job_id, _, step in pulumi_steps(load(path))
               for key in step.get("with", {}) if key not in PULUMI_ACTION_INPUTS}
    assert not unknown, f"pulumi/actions ignores these inputs: {sorted(unknown)}"


def test_pr_preview_runs_for_every_stack_file():
    workflow = load(PULL_REQUEST)
    assert "pull_request" in triggers(workflow)
    previews = pulumi_jobs(workflow, "preview")
    assert previews, "pull_request.yml runs no `pulumi preview`"
    previewed = sorted(stack for job, step in previews.values() for stack in stacks_of(job, step))
    assert previewed == stacks_from_files(), (
        f"the preview matrix {previewed} must list every Pulumi.<stack>.yaml: {stacks_from_files()}")


def test_pr_preview_comments_on_the_pr_with_pull_requests_write():
    workflow = load(PULL_REQUEST)
    for job_id, (job, step) in pulumi_jobs(workflow, "preview").items():
        inputs = step.get("with", {})
        assert is_true(inputs.get("comment-on-pr")), f"{job_id}: comment-on-pr must be true"
        assert is_secret(inputs.get("github-token"), "GITHUB_TOKEN"), f"{job_id}: github-token must be GITHUB_TOKEN"
        permissions = job.get("permissions", workflow.get("permissions")) or {}
        assert isinstance(permissions, dict), f"{job_id}: list permissions explicitly"
        assert permissions.get("pull-requests") == "write", f"{job_id}: commenting needs pull-requests: write"
        assert permissions.get("contents") == "read", f"{job_id}: checkout needs contents: read"


def test_pr_preview_checks_the_policy_pack():
    for job_id, (_, step) in pulumi_jobs(load(PULL_REQUEST), "preview").items():
        assert step.get("with", {}).get("policyPacks") == POLICY_PACK, f"{job_id}: policyPacks must be {POLICY_PACK}"


def test_policy_pack_named_by_the_workflows_exists():
    assert (ROOT / POLICY_PACK / "PulumiPolicy.yaml").is_file(), (
        f"the workflows pass `policyPacks: {POLICY_PACK}`, but {POLICY_PACK}/PulumiPolicy.yaml does not exist")


def test_two_previews_of_one_pr_do_not_race():
    workflow = load(PULL_REQUEST)
    for job_id, (job, _) in pulumi_jobs(workflow, "preview").items():
        concurrency = job.get("concurrency", workflow.get("concurrency"))
        group = concurrency.get("group", "") if isinstance(concurrency, dict) else concurrency or ""
        assert "github.event.pull_request.number" in group, f"{job_id}: concurrency must be keyed on the PR number"


def test_every_referenced_secret_is_a_documented_repository_secret():
    for path in ALL_WORKFLOWS:
        referenced = {a or b for a, b in SECRET_REFERENCE.findall(path.read_text())}
        undocumented = referenced - DOCUMENTED_SECRETS - AUTOMATIC_SECRETS
        assert not undocumented, f"{path.name} uses secrets the README does not list: {sorted(undocumented)}"


def test_every_pulumi_step_gets_backend_passphrase_exoscale_and_sos_credentials_from_secrets():
    for path in ALL_WORKFLOWS:
        workflow = load(path)
        for job_id, job, step in pulumi_steps(workflow):
            env = step_env(workflow, job, step)
            wrong = {var: env.get(var) for var, secret in PULUMI_STEP_ENV.items()
                     if not is_secret(env.get(var), secret)}
            assert not wrong, f"{path.name} {job_id}: expected {PULUMI_STEP_ENV} (variable: secret), got {wrong}"
            cloud_url = step.get("with", {}).get("cloud-url")
            assert is_secret(cloud_url, "PULUMI_BACKEND_URL"), f"{path.name} {job_id}: cloud-url is {cloud_url!r}"


def test_pulumi_jobs_install_requirements_themselves_into_the_projects_venv():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["runtime"]["options"]["virtualenv"] == "venv", "the install commands assume Pulumi.yaml's venv"
    for path in ALL_WORKFLOWS:
        for job_id, job, pulumi_step in pulumi_steps(load(path)):
            before = job["steps"][: job["steps"].index(pulumi_step)]
            pythons = [s for s in before if uses(s, "actions/setup-python")]
            assert pythons, f"{path.name} {job_id}: no actions/setup-python before pulumi/actions"
            assert str(pythons[0].get("with", {}).get("python-version")) == PYTHON_VERSION
            scripts = "\n".join(str(s.get("run", "")) for s in before[before.index(pythons[0]):])
            missing = [command for command in INSTALL_COMMANDS if command not in scripts]
            assert not missing, f"{path.name} {job_id}: pulumi/actions installs nothing; missing {missing}"


def test_test_jobs_run_the_readme_test_command_with_python_and_go():
    for path in ALL_WORKFLOWS:
        job = jobs(load(path)).get("test")
        assert job is not None, f"{path.name} has no `test` job"
        steps = job.get("steps") or []
        runs = [i for i, s in enumerate(steps) if str(s.get("run", "")).strip() == TEST_COMMAND]
        assert runs, f"{path.name}: the test job must run `{TEST_COMMAND}`"
        before = steps[: runs[0]]
        python = [s for s in before if uses(s, "actions/setup-python")]
        assert python, f"{path.name}: the test job needs actions/setup-python"
        assert str(python[0].get("with", {}).get("python-version")) == PYTHON_VERSION
        assert any(uses(s, "actions/setup-go") for s in before), (
            f"{path.name}: `{TEST_COMMAND}` installs actionlint with Go: add actions/setup-go")


def test_pulumi_jobs_wait_for_the_tests():
    for path in ALL_WORKFLOWS:
        workflow = load(path)
        for job_id, _, _ in pulumi_steps(workflow):
            assert "test" in all_needs(workflow, job_id), f"{path.name} {job_id} must need the test job"


def test_push_to_main_deploys_dev_then_prod_behind_production_approval():
    workflow = load(PUSH)
    push = triggers(workflow).get("push") or {}
    assert push.get("branches") == ["main"], f"push.yml must deploy pushes to main only, not {push}"
    ups = {stack: job_id for job_id, (job, step) in pulumi_jobs(workflow, "up").items()
           for stack in stacks_of(job, step)}
    assert {"dev", "prod"} <= set(ups), f"push.yml deploys {sorted(ups)}"
    prod = jobs(workflow)[ups["prod"]]
    assert environment_of(prod) == "production", "prod's `up` must wait for the production environment's approval"
    assert ups["dev"] in needs(prod), "prod's `up` must need dev's"
    assert environment_of(jobs(workflow)[ups["dev"]]) != "production"


def test_push_deploys_every_stack_file():
    workflow = load(PUSH)
    deployed = sorted(stack for job, step in pulumi_jobs(workflow, "up").values() for stack in stacks_of(job, step))
    assert deployed == stacks_from_files(), f"push.yml deploys {deployed}, the stack files are {stacks_from_files()}"


def test_up_runs_one_at_a_time_per_stack_and_is_never_cancelled():
    workflow = load(PUSH)
    assert not (workflow.get("concurrency") or {}).get("cancel-in-progress"), "a workflow-level cancel would stop `up`"
    groups = {}
    for job_id, (job, step) in pulumi_jobs(workflow, "up").items():
        concurrency = job.get("concurrency")
        assert isinstance(concurrency, dict), f"{job_id}: give `up` a concurrency group"
        assert concurrency.get("cancel-in-progress") is False, f"{job_id}: cancel-in-progress must be false"
        (stack,) = stacks_of(job, step)
        assert stack in concurrency["group"], f"{job_id}: the concurrency group must name the stack {stack}"
        groups[concurrency["group"]] = job_id
    assert len(groups) == len(pulumi_jobs(workflow, "up")), "each stack needs its own concurrency group"


def test_pulumi_cli_is_pinned_to_the_sdk_version():
    sdk = pinned_version(ROOT / "requirements.txt", "pulumi")
    for path in ALL_WORKFLOWS:
        for job_id, _, step in pulumi_steps(load(path)):
            cli = str(step.get("with", {}).get("pulumi-version"))
            assert cli == sdk, f"{path.name} {job_id}: pulumi-version {cli} must match requirements.txt's pulumi=={sdk}"


E2E_COMMAND = "make e2e"  # the README's end-to-end command
GO_CACHES = ("~/.cache/go-build", "~/go/pkg/mod")  # Go's default GOCACHE and GOMODCACHE on Linux
E2E_TOOLS = "e2e/.bin"
# What e2e/tools/build.sh builds from: a change to any of them must miss the cache.
TOOL_INPUTS = {"e2e/tools/**/go.mod", "e2e/tools/**/go.sum", "e2e/tools/**/*.go", "e2e/tools/build.sh"}


def newest_go_directive() -> tuple[int, int]:
    """The Go release the e2e tool modules require (their `go` lines)."""
    found = [tuple(int(n) for n in m.groups())
             for path in (ROOT / "e2e" / "tools").glob("*/go.mod")
             for m in [re.search(r"^go (\d+)\.(\d+)", path.read_text(), re.M)] if m]
    assert found, "no go.mod under e2e/tools"
    return max(found)


def test_pull_requests_run_the_e2e_with_go_and_the_charts_from_the_official_repository():
    workflow = load(PULL_REQUEST)
    runs = [(job_id, job, i) for job_id, job in jobs(workflow).items()
            for i, step in enumerate(job.get("steps") or []) if str(step.get("run", "")).strip() == E2E_COMMAND]
    assert runs, f"pull_request.yml must run `{E2E_COMMAND}`"
    ((job_id, job, index),) = runs
    assert "if" not in job, "forks' pull requests run the e2e too: it needs no secrets"
    before = job["steps"][:index]
    gos = [s for s in before if uses(s, "actions/setup-go")]
    assert gos, f"{job_id}: `{E2E_COMMAND}` builds its tools with Go: add actions/setup-go"
    version = tuple(int(n) for n in str(gos[0]["with"]["go-version"]).split(".")[:2])
    assert version >= newest_go_directive(), f"{job_id}: the tool modules need Go {newest_go_directive()}"
    # The charts come from istioChartRepository's default, not a mirror that a runner does not have.
    for step in job["steps"]:
        assert "ISTIO_CHART_MIRROR" not in step_env(workflow, job, step), f"{job_id}: leave ISTIO_CHART_MIRROR unset"


def test_the_e2e_tools_and_go_caches_are_cached_by_the_tool_modules():
    workflow = load(PULL_REQUEST)
    ((job_id, job),) = [(i, j) for i, j in jobs(workflow).items()
                        if any(str(s.get("run", "")).strip() == E2E_COMMAND for s in j.get("steps") or [])]
    steps = job["steps"]
    e2e = next(i for i, s in enumerate(steps) if str(s.get("run", "")).strip() == E2E_COMMAND)
    caches = [s for s in steps[:e2e] if uses(s, "actions/cache")]
    assert caches, f"{job_id}: cache the Go caches and {E2E_TOOLS} before `{E2E_COMMAND}`"
    inputs = caches[0]["with"]
    paths = {line.strip() for line in str(inputs["path"]).splitlines() if line.strip()}
    assert {*GO_CACHES, E2E_TOOLS} <= paths, paths
    (hashed,) = re.findall(r"hashFiles\(([^)]*)\)", inputs["key"])
    assert set(re.findall(r"'([^']+)'", hashed)) == TOOL_INPUTS
    assert not any(uses(s, "actions/setup-go") and s.get("with", {}).get("cache") not in (False, "false")
                   for s in steps), f"{job_id}: setup-go's own cache (keyed by a root go.sum) would miss"
