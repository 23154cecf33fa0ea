"""The critical path of an engine run (e2e/timing.py) and its report in `make bench`
(bench/measured.py engine_lines), on hand-made runs whose answer is known."""

from __future__ import annotations

import json
from pathlib import Path

from bench.measured import engine_lines
from e2e.engine import ResourceStep, RunReport
from e2e.timing import critical_path

STACK = "urn:pulumi:dev::p::pulumi:pulumi:Stack::p-dev"


def urn(name: str) -> str:
    return f"urn:pulumi:dev::p::t:index:T::{name}"


def run_of(steps: dict[str, tuple[float, float]]) -> RunReport:
    report = RunReport("up")
    for name, (started, ended) in steps.items():
        report.steps[urn(name)] = ResourceStep(urn(name), "t:index:T", "create", started, ended)
    report.steps[STACK] = ResourceStep(STACK, "pulumi:pulumi:Stack", "create", 0.0, 99.0)
    return report


def resources(edges: dict[str, list[str]], provider: dict[str, str] | None = None) -> list[dict]:
    found = [{"urn": STACK, "custom": False}]
    for name, deps in edges.items():
        resource = {"urn": urn(name), "custom": True, "dependencies": [urn(d) for d in deps]}
        if provider and name in provider:
            resource["provider"] = f"{urn(provider[name])}::some-id"
        found.append(resource)
    return found


def test_the_chain_follows_the_dependency_that_ended_last_before_each_start():
    # a (0-2) -> c (5-9); b (0-4) -> c: c waited for b, which ended last; d ran alone.
    report = run_of({"a": (0, 2), "b": (0, 4), "c": (5, 9), "d": (0, 3)})
    path = critical_path(report, resources({"a": [], "b": [], "c": ["a", "b"], "d": []}))
    assert [s.name for s in path.chain] == ["b", "c"]
    assert path.seconds == 9 and path.busy_seconds == 8


def test_a_provider_holds_back_its_resources_and_the_stack_never_counts():
    report = run_of({"k8s": (0, 3), "ns": (3, 4)})
    path = critical_path(report, resources({"k8s": [], "ns": []}, provider={"ns": "k8s"}))
    assert [s.name for s in path.chain] == ["k8s", "ns"] and path.seconds == 4


def test_bench_prints_the_engine_rows_it_finds_and_says_when_there_are_none(tmp_path: Path):
    assert any("no engine measurement" in line for line in engine_lines(tmp_path))
    (tmp_path / "timings.json").write_text(json.dumps({
        "clusters": 2, "phases": {"preview_first_deploy_seconds": 2.5, "apply_seconds": 22.0},
        "critical_paths": {"apply_seconds": {"seconds": 20.0, "busy_seconds": 18.0}}}))
    (tmp_path / "engine-scale-8.json").write_text(json.dumps({
        "clusters": 8, "preview_seconds": 6.0, "up_seconds": 54.0, "critical_path_seconds": 51.0,
        "critical_path_busy_seconds": 29.0}))
    lines = engine_lines(tmp_path)
    assert "| 2 | 2.5 | 22.0 | 20.0 | 18.0 |" in lines and "| 8 | 6.0 | 54.0 | 51.0 | 29.0 |" in lines
