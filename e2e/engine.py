"""The real Pulumi engine, driven through the Automation API.

The real `__main__.py` runs as an inline program (the SDK's own language runtime server, so no
Python language host is needed; ../shared/reference/real-pulumi-engine.md) under the Pulumi CLI
and engine built in e2e/.bin, with the real pulumi-kubernetes provider and the stand-in Exoscale
and TLS provider plugins (e2e/providers) on PATH. State lives in a `file://` backend of the
run's own, encrypted with a passphrase, exactly as `make deploy` keeps it.

Every verdict a test draws about what a run did (created, updated, replaced, deleted, nothing)
comes from the engine's own event stream and summary, never from this module's reasoning.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pulumi import automation as auto
from pulumi.automation import events

from mesh_constants import PROJECT

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "e2e" / ".bin"
PROVIDERS_BIN = ROOT / "e2e" / "providers" / "bin"
POLICY_PACK_LAUNCHER = ROOT / "e2e" / "policy_pack" / "sks-istio-mesh-invariants"
OUT = ROOT / "e2e" / ".out"
STACK = "dev"
PASSPHRASE = "e2e-only-passphrase"

# The engine's step ops (pulumi/pulumi sdk/go/common/apitype OpType), grouped as a reviewer reads them.
CREATES = {"create"}
UPDATES = {"update"}
REPLACES = {"replace", "create-replacement", "delete-replaced"}
DELETES = {"delete"}
UNCHANGED = {"same", "read", "refresh"}


class EngineRunError(RuntimeError):
    """A preview, up or destroy the engine reported as failed, with its diagnostics."""

    report: RunReport


@dataclass
class ResourceStep:
    """One resource's step, as the engine's events reported it."""

    urn: str
    type: str
    op: str
    started: float  # time.monotonic() when the engine's ResourcePreEvent arrived
    ended: float | None = None  # ... and its ResOutputsEvent (None: failed or preview)
    detailed_diff: dict[str, str] = field(default_factory=dict)  # property path -> diff kind

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[1]


@dataclass
class RunReport:
    """What one engine operation did, from its events and summary."""

    kind: str  # "preview", "up" or "destroy"
    outputs: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, int] = field(default_factory=dict)  # the engine's resource_changes
    steps: dict[str, ResourceStep] = field(default_factory=dict)  # urn -> its (last) step
    ops: dict[str, list[str]] = field(default_factory=dict)  # urn -> every op the engine took for it
    diagnostics: list[tuple[str, str, str]] = field(default_factory=list)  # (severity, urn, message)
    policy_events: list[events.PolicyEvent] = field(default_factory=list)
    # What the CLI printed, stdout and stderr as a terminal shows them (--diff puts diagnostics on stderr).
    text: str = ""
    seconds: float = 0.0
    engine_seconds: int | None = None  # the summary's duration
    policy_packs: dict[str, str] = field(default_factory=dict)  # the summary's: name -> version

    def urns_with(self, ops: set[str]) -> list[str]:
        return sorted(urn for urn, taken in self.ops.items() if set(taken) & ops)

    @property
    def created(self) -> list[str]:
        return self.urns_with(CREATES)

    @property
    def updated(self) -> list[str]:
        return self.urns_with(UPDATES)

    @property
    def replaced(self) -> list[str]:
        return self.urns_with(REPLACES)

    @property
    def deleted(self) -> list[str]:
        return self.urns_with(DELETES)

    @property
    def changed(self) -> bool:
        return any(op not in UNCHANGED for op in self.summary)

    def warnings(self) -> list[str]:
        return [message for severity, _, message in self.diagnostics if severity == "warning"]

    def resource_seconds(self) -> list[tuple[str, str, float]]:
        return [(s.type, s.name, s.ended - s.started) for s in self.steps.values() if s.ended is not None]


class _EventCollector:
    """Turns the engine's JSON event stream into a RunReport as it arrives."""

    def __init__(self, report: RunReport) -> None:
        self.report = report
        self._lock = threading.Lock()

    def __call__(self, event: events.EngineEvent) -> None:
        now = time.monotonic()
        with self._lock:
            if event.resource_pre_event:
                meta = event.resource_pre_event.metadata
                op = _op(meta.op)
                self.report.ops.setdefault(meta.urn, []).append(op)
                detailed = {path: _op(diff.diff_kind) for path, diff in (meta.detailed_diff or {}).items()}
                earlier = self.report.steps.get(meta.urn)
                # A replacement comes as several steps (create-replacement, replace, delete-replaced):
                # the resource's step starts with the first of them.
                started = earlier.started if earlier is not None else now
                self.report.steps[meta.urn] = ResourceStep(meta.urn, meta.type, op, started, None, detailed)
            elif event.res_outputs_event:
                meta = event.res_outputs_event.metadata
                step = self.report.steps.get(meta.urn)
                if step is not None:
                    step.ended = now
            elif event.diagnostic_event:
                diagnostic = event.diagnostic_event
                self.report.diagnostics.append((diagnostic.severity, diagnostic.urn or "", diagnostic.message))
            elif event.policy_event:
                self.report.policy_events.append(event.policy_event)
            elif event.summary_event:
                summary = event.summary_event
                self.report.summary = {_op(op): count for op, count in summary.resource_changes.items()}
                self.report.engine_seconds = summary.duration_seconds
                self.report.policy_packs = dict(summary.policy_packs or {})


def _op(value: Any) -> str:
    return getattr(value, "value", str(value))


class Engine:
    """One stack of the real program on the real engine, across several operations."""

    def __init__(self, workdir: Path, env: Mapping[str, str], policy_pack: bool = True) -> None:
        self.workdir = workdir
        self.project_dir = workdir / "project"
        self.state_dir = workdir / "state"
        self.project_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
        # The project file as users have it, with the backend pointed at this run's own folder.
        project["backend"] = {"url": f"file://{self.state_dir}"}
        (self.project_dir / "Pulumi.yaml").write_text(yaml.safe_dump(project, sort_keys=False))
        self.env = {
            **env,
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_HOME": str(workdir / "pulumi-home"),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            # No ambient cluster: a resource without its explicit provider must fail, not deploy here.
            "KUBECONFIG": str(workdir / "no-such-kubeconfig"),
        }
        self.policy_packs = [str(POLICY_PACK_LAUNCHER)] if policy_pack else []
        self.stack = auto.create_or_select_stack(
            stack_name=STACK, project_name=PROJECT, program=_run_main,
            opts=auto.LocalWorkspaceOptions(
                work_dir=str(self.project_dir), pulumi_home=str(workdir / "pulumi-home"), env_vars=self.env,
                secrets_provider="passphrase",
                pulumi_command=auto.PulumiCommand(root=str(self._cli_root()), skip_version_check=True),
            ),
        )
        self.config: dict[str, Any] = {}
        self.checkpoint_race_retries = 0

    def _cli_root(self) -> Path:
        """The Automation API runs `<root>/bin/pulumi`: here a wrapper that puts the CLI built in
        e2e/.bin, with the plugins it starts, in a process group of its own and leaves a pid file,
        as every other process of the run does. The Automation API does not stop the CLI when the
        run is interrupted; the session's clean-up (or the next run) then kills that group."""
        root = self.workdir / "pulumi-cli"
        (root / "bin").mkdir(parents=True, exist_ok=True)
        wrapper = root / "bin" / "pulumi"
        wrapper.write_text(f"""#!{sys.executable}
import os, sys
sys.path.insert(0, {str(ROOT)!r})
from e2e.controlplane import record_pid
os.setsid()
record_pid(os.getpid())
os.execv({str(BIN / "pulumi")!r}, [{str(BIN / "pulumi")!r}, *sys.argv[1:]])
""")
        wrapper.chmod(0o755)
        return root

    # Config ------------------------------------------------------------------------------
    def set_config(self, config: Mapping[str, Any]) -> None:
        """Writes the stack file the way a user keeps Pulumi.<stack>.yaml: structured values as
        YAML, secrets encrypted by the CLI."""
        path = self.project_dir / f"Pulumi.{STACK}.yaml"
        settings = yaml.safe_load(path.read_text()) if path.exists() else {}
        settings = settings or {}
        settings["config"] = {f"{PROJECT}:{key}": value for key, value in config.items()
                              if key not in SECRET_KEYS}
        path.write_text(yaml.safe_dump(settings, sort_keys=False))
        secrets = {f"{PROJECT}:{key}": auto.ConfigValue(value=str(value), secret=True)
                   for key, value in config.items() if key in SECRET_KEYS}
        if secrets:
            self.stack.set_all_config(secrets)
        self.config = dict(config)

    # Operations --------------------------------------------------------------------------
    def preview(self, config: Mapping[str, Any], scenario: str, policy_config: Path | None = None) -> RunReport:
        """`pulumi preview --diff`; its text is kept as e2e/.out/preview-<scenario>.txt."""
        self.set_config(config)
        report = RunReport("preview")
        collected: list[str] = []
        try:
            self._run(report, lambda: self.stack.preview(
                diff=True, color="never", on_output=collected.append, on_error=collected.append,
                on_event=_EventCollector(report), policy_packs=self.policy_packs,
                policy_pack_configs=[str(policy_config)] if policy_config else None))
        finally:
            report.text = "\n".join(collected)
            OUT.mkdir(exist_ok=True)
            (OUT / f"preview-{scenario}.txt").write_text(report.text + "\n")
        return report

    def up(self, config: Mapping[str, Any]) -> RunReport:
        self.set_config(config)
        report = RunReport("up")
        collected: list[str] = []
        try:
            result = self._run(report, lambda: self.stack.up(
                color="never", on_output=collected.append, on_error=collected.append,
                on_event=_EventCollector(report), policy_packs=self.policy_packs, suppress_progress=True))
        finally:
            report.text = "\n".join(collected)
        report.outputs = {key: value.value for key, value in result.outputs.items()}
        return report

    def destroy(self) -> RunReport:
        report = RunReport("destroy")
        collected: list[str] = []
        try:
            self._run(report, lambda: self.stack.destroy(
                color="never", on_output=collected.append, on_error=collected.append,
                on_event=_EventCollector(report), suppress_progress=True))
        finally:
            report.text = "\n".join(collected)
        return report

    def _run(self, report: RunReport, operation: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            try:
                return operation()
            except auto.CommandError:
                if not any(CHECKPOINT_RACE in message for _, _, message in report.diagnostics):
                    raise
                # Seen here about once in ten runs: the program's StackReference to its own stack read
                # the file backend's checkpoint while it was being written. Retried once, in the open:
                # the run's output says so, and a second failure fails the run.
                self.checkpoint_race_retries += 1
                print(f"e2e: pulumi {report.kind} hit '{CHECKPOINT_RACE}' on the stack's own checkpoint; retrying once")
                report.diagnostics.clear()
                report.steps.clear()
                report.ops.clear()
                return operation()
        except auto.CommandError as error:
            problems = [f"{severity} {urn}: {message.strip()}" for severity, urn, message in report.diagnostics
                        if severity == "error"]
            error_report = EngineRunError(f"pulumi {report.kind} failed:\n" + "\n".join(problems or [str(error)]))
            error_report.report = report
            raise error_report from None
        finally:
            report.seconds = time.monotonic() - started

    # State -------------------------------------------------------------------------------
    def resources(self) -> list[dict[str, Any]]:
        """The stack's state as the engine keeps it (secrets decrypted, for assertions)."""
        deployment = self.stack.export_stack().deployment or {}
        return deployment.get("resources") or []

    def raw_state_files(self) -> list[Path]:
        """Every file the backend wrote: the checkpoint, its backups and history."""
        return sorted(p for p in self.state_dir.rglob("*") if p.is_file())

    def export_without_secrets(self) -> str:
        """`pulumi stack export` as a user or a CI log would see it (no --show-secrets)."""
        argv = [str(BIN / "pulumi"), "stack", "export", "--stack", STACK, "--cwd", str(self.project_dir)]
        return subprocess.run(argv, env={**os.environ, **self.env}, capture_output=True, text=True, check=True).stdout


# The file backend's error when the StackReference to the stack itself reads a half-written checkpoint.
CHECKPOINT_RACE = "failed to load checkpoint: EOF"

# Keys the stack file keeps encrypted (pulumi config set --secret).
SECRET_KEYS = frozenset({"rootCaKeyPem"})


def _run_main() -> None:
    """The inline program: the project's real __main__.py, as `pulumi up` would run it."""
    runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")


def engine_path() -> str:
    """PATH with the stand-in provider plugins and the built engine and provider first."""
    return os.pathsep.join([str(PROVIDERS_BIN), str(BIN), os.environ.get("PATH", "")])


def engine_versions() -> str:
    """The versions the built binaries report about themselves."""
    cli = subprocess.run([str(BIN / "pulumi"), "version"], capture_output=True, text=True, check=False).stdout.strip()
    return f"pulumi CLI {cli or '?'}, pulumi-resource-kubernetes {K8S_PROVIDER_VERSION}"


def _stamped_provider_version() -> str:
    """The version e2e/tools/build.sh stamps into the provider (the tag of the one served pseudo-version)."""
    match = re.search(r"^k8s_provider_version=(\S+)", (ROOT / "e2e" / "tools" / "build.sh").read_text(), re.M)
    return match[1] if match else "?"


K8S_PROVIDER_VERSION = _stamped_provider_version()
