"""scripts/pulumi-stack.sh, behind `make deploy/preview/destroy/kubeconfig`: one-line errors for
what a first-time user is missing, and the pulumi commands it really runs (with a fake CLI)."""

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from testing.program import ROOT, Recording

CREDENTIALS = {"EXOSCALE_API_KEY": "EXOtest", "EXOSCALE_API_SECRET": "secret", "PULUMI_CONFIG_PASSPHRASE": "pass"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the script beside stack files, so runs leave the real checkout alone."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "pulumi-stack.sh", tmp_path / "scripts")
    for stack_file in ROOT.glob("Pulumi.*.yaml"):
        shutil.copy(stack_file, tmp_path)
    return tmp_path


def fake_pulumi(bin_dir: Path, log: Path) -> None:
    """Logs its arguments; `stack export` prints state.json beside the log, `up` fails if up.fails exists."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "pulumi"
    script.write_text(
        f'#!/bin/sh\necho "$*" >> {log}\n'
        'case "$*" in "stack output kubeconfig"*) echo "apiVersion: v1";; esac\n'
        f'case "$*" in "stack export"*) cat {log.parent / "state.json"};; esac\n'
        f'case "$*" in up*) [ ! -e {log.parent / "up.fails"} ] || exit 1;; esac\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def run(project: Path, *args: str, env: dict[str, str], with_pulumi: bool = True) -> subprocess.CompletedProcess:
    log = project / "pulumi.log"
    path = "/usr/bin:/bin"
    if with_pulumi:
        fake_pulumi(project / "bin", log)
        path = f"{project / 'bin'}:{path}"
    return subprocess.run(["bash", str(project / "scripts" / "pulumi-stack.sh"), *args],
                          env={"PATH": path, "HOME": str(project), **env},
                          capture_output=True, text=True, timeout=30, check=False)


def test_missing_pulumi_cli_is_one_line_not_a_traceback(project):
    result = run(project, "dev", "up", env=CREDENTIALS, with_pulumi=False)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "Pulumi CLI is not installed" in result.stderr


@pytest.mark.parametrize("missing", ["EXOSCALE_API_KEY", "EXOSCALE_API_SECRET"])
def test_missing_exoscale_credentials_are_named(project, missing):
    env = {k: v for k, v in CREDENTIALS.items() if k != missing}
    result = run(project, "dev", "up", env=env)
    assert result.returncode == 1 and "EXOSCALE_API_KEY and EXOSCALE_API_SECRET" in result.stderr
    assert not (project / "pulumi.log").exists(), "nothing runs before the check"


def test_missing_passphrase_is_named(project):
    env = {k: v for k, v in CREDENTIALS.items() if k != "PULUMI_CONFIG_PASSPHRASE"}
    result = run(project, "dev", "up", env=env)
    assert result.returncode == 1 and "PULUMI_CONFIG_PASSPHRASE" in result.stderr


def test_unknown_stack_lists_the_stack_files(project):
    # A name no stack file uses, whatever stacks the README's recipe has added.
    result = run(project, "no-such-stack", "up", env=CREDENTIALS)
    assert result.returncode == 1
    assert "no Pulumi.no-such-stack.yaml" in result.stderr
    assert all(p.name.split(".")[1] in result.stderr for p in ROOT.glob("Pulumi.*.yaml"))


def test_deploy_selects_the_stack_on_the_local_backend_and_runs_up_with_the_policy_pack(project):
    result = run(project, "dev", "up", env=CREDENTIALS)
    assert result.returncode == 0, result.stderr
    assert (project / ".pulumi-state").is_dir(), "the file backend's directory must exist"
    calls = (project / "pulumi.log").read_text().splitlines()
    assert calls == ["stack select --create --secrets-provider passphrase dev",
                     "up --stack dev --policy-pack policy"]


def test_a_team_backend_from_the_environment_is_left_alone(project):
    result = run(project, "prod", "preview", env={**CREDENTIALS, "PULUMI_BACKEND_URL": "s3://bucket"})
    assert result.returncode == 0, result.stderr
    assert not (project / ".pulumi-state").exists()
    assert (project / "pulumi.log").read_text().splitlines()[-1] == "preview --stack prod --policy-pack policy"


def test_kubeconfig_is_written_readable_by_the_owner_only(project):
    result = run(project, "dev", "kubeconfig", env={"PULUMI_CONFIG_PASSPHRASE": "pass"})
    assert result.returncode == 0, result.stderr
    kubeconfig = project / "kubeconfig.yaml"
    assert kubeconfig.read_text() == "apiVersion: v1\n"
    assert stat.S_IMODE(os.stat(kubeconfig).st_mode) == 0o600


def test_kubeconfig_file_is_git_ignored():
    assert "kubeconfig.yaml" in (ROOT / ".gitignore").read_text().split()


KUBECONFIG_TYPE = "exoscale:index/sksKubeconfig:SksKubeconfig"
PROVIDER_TYPE = "pulumi:providers:kubernetes"


def paused_stack(recording: Recording) -> list[tuple[str, str]]:
    """(type, URN) of every resource a deployed stack holds, in registration order: the dev stack
    as the program registers it, names and component nesting included."""
    return [("pulumi:pulumi:Stack", recording.stack_urn), *((r.type, r.urn) for r in recording.resources)]


def write_state(project: Path, resources: list[tuple[str, str]]) -> None:
    deployment = {"manifest": {}, "resources": [{"urn": urn, "type": typ} for typ, urn in resources]}
    (project / "state.json").write_text(json.dumps({"version": 3, "deployment": deployment}))


@pytest.mark.parametrize("action", ["destroy", "refresh"])
def test_destroy_and_refresh_first_renew_the_admin_kubeconfigs_and_only_their_providers(project, action, dev):
    # After a pause longer than the kubeconfig TTL, every Kubernetes call with the stored
    # credentials is Unauthorized: a targeted `up` renews exactly the kubeconfigs and providers.
    state = paused_stack(dev)
    write_state(project, state)
    result = run(project, "dev", action, env=CREDENTIALS)
    assert result.returncode == 0, result.stderr
    calls = (project / "pulumi.log").read_text().splitlines()
    renewed = [urn for typ, urn in state if typ in (KUBECONFIG_TYPE, PROVIDER_TYPE)]
    assert len(renewed) == 4, "one kubeconfig and one provider per dev cluster"
    assert calls[1:] == [
        "stack export --stack dev",
        "up --stack dev --yes " + " ".join(f"--target {urn}" for urn in renewed),
        f"{action} --stack dev",
    ]


def test_destroying_a_stack_without_clusters_runs_no_renewal(project, dev):
    write_state(project, paused_stack(dev)[:1])
    result = run(project, "dev", "destroy", env=CREDENTIALS)
    assert result.returncode == 0, result.stderr
    assert [c.split(" --")[0] for c in (project / "pulumi.log").read_text().splitlines()[1:]] == [
        "stack export", "destroy"]


def test_a_failed_renewal_stops_before_destroy(project, dev):
    write_state(project, paused_stack(dev))
    (project / "up.fails").touch()
    result = run(project, "dev", "destroy", env=CREDENTIALS)
    assert result.returncode != 0
    assert not any(c.startswith("destroy") for c in (project / "pulumi.log").read_text().splitlines())


def test_renew_0_skips_the_renewal_when_it_cannot_run(project, dev):
    # A cluster deleted outside Pulumi, or a config that no longer validates, makes the targeted
    # `up` fail: RENEW=0 lets destroy go ahead with the stored kubeconfigs.
    write_state(project, paused_stack(dev))
    (project / "up.fails").touch()
    result = run(project, "dev", "destroy", env={**CREDENTIALS, "RENEW": "0"})
    assert result.returncode == 0, result.stderr
    assert (project / "pulumi.log").read_text().splitlines()[1:] == ["destroy --stack dev"]
