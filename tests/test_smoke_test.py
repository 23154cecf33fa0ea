"""The cross-cluster smoke test that gates `pulumi up`: where it runs, what it waits for, when it
runs again, and its script run for real against a scripted curl."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

from components.smoke_test import smoke_test_script
from testing.program import Recording, run_program, stack_config

RELEASE = "kubernetes:helm.sh/v3:Release"


def smoke_job(recording: Recording):
    (job,) = recording.k8s_objects("Job")
    return job


def test_smoke_test_runs_in_the_client_cluster_and_depends_on_everything_it_proves(three_clusters):
    recording = three_clusters
    job = smoke_job(recording)
    assert recording.cluster_of(job) == "cluster1"
    proven = [r for r in recording.k8s_objects("Secret") if r.inputs["metadata"]["name"].startswith("istio-remote-")]
    proven += [r for r in recording.of_type(RELEASE) if r.inputs["chart"] == "gateway"]
    proven += recording.k8s_objects("Gateway")
    proven += [r for r in recording.k8s_objects("Deployment") + recording.k8s_objects("Service")
               if r.inputs["metadata"]["name"] == "exo-webtest"]
    assert len(proven) == 6 + 3 + 3 + 2
    for resource in proven:
        assert recording.depends_on(job, resource), resource.name


def test_a_failed_smoke_test_is_replaced_by_the_next_up_and_reports_before_pulumi_times_out(dev):
    job = smoke_job(dev)
    assert job.inputs["metadata"]["annotations"]["pulumi.com/replaceUnready"] == "true"
    assert int(job.create_timeout.removesuffix("m")) * 60 > job.inputs["spec"]["activeDeadlineSeconds"]


def test_smoke_test_survives_its_sidecar(dev):
    template = smoke_job(dev).inputs["spec"]["template"]
    assert template["metadata"]["annotations"]["sidecar.istio.io/nativeSidecar"] == "true"
    assert template["spec"]["restartPolicy"] == "Never"
    assert "quitquitquit" in template["spec"]["containers"][0]["command"][-1]


def test_smoke_test_reruns_only_when_the_mesh_changes(dev):
    name = smoke_job(dev).inputs["metadata"]["name"]
    assert smoke_job(run_program(stack_config("dev"))).inputs["metadata"]["name"] == name, "stable across runs"
    upgraded = run_program({**stack_config("dev"), "istioVersion": "1.30.4"})
    assert smoke_job(upgraded).inputs["metadata"]["name"] != name
    assert smoke_job(upgraded).urn == smoke_job(dev).urn


def test_smoke_test_reruns_when_clusters_change(dev, three_clusters):
    assert smoke_job(three_clusters).inputs["metadata"]["name"] != smoke_job(dev).inputs["metadata"]["name"]


@pytest.fixture
def fake_bin(tmp_path: Path):
    """A PATH with a scripted `curl` and an instant `sleep`, to run the smoke script for real."""
    def make(answer: str, exit_code: int = 0) -> dict[str, str]:
        for name, body in (("curl", f'case "$*" in *quitquitquit*) exit 0;; esac\necho "{answer}"\nexit {exit_code}'),
                           ("sleep", "exit 0")):
            path = tmp_path / name
            path.write_text(f"#!/bin/sh\n{body}\n")
            path.chmod(path.stat().st_mode | stat.S_IEXEC)
        return {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}",
                "TERMINATION_LOG": str(tmp_path / "termination-log")}
    return make


def run_smoke_script(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", smoke_test_script()], env=env, capture_output=True, text=True,
                          timeout=30, check=False)


def test_smoke_script_passes_on_the_exo_webtest_page(fake_bin):
    result = run_smoke_script(fake_bin("<h1>Hello World from host exo-webtest-5d9c7b8f4-x2x9k</h1>"))
    assert result.returncode == 0, result.stderr


def test_smoke_script_fails_saying_what_it_called_and_what_came_back(fake_bin, tmp_path):
    result = run_smoke_script(fake_bin("no healthy upstream"))
    assert result.returncode == 1
    assert "http://exo-webtest:3000/" in result.stderr and "no healthy upstream" in result.stderr
    assert "no healthy upstream" in (tmp_path / "termination-log").read_text()


def test_smoke_script_retries_through_connection_errors(fake_bin):
    result = run_smoke_script(fake_bin("curl: (6) Could not resolve host: exo-webtest", exit_code=6))
    assert result.returncode == 1
    assert result.stderr.count("Could not resolve host") >= 30
