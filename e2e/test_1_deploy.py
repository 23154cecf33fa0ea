"""The dev stack's first `pulumi preview` and `pulumi up` on the real engine, against real API
servers; what the engine's state holds afterwards."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path

import pytest
from kubernetes.client import AppsV1Api, CoreV1Api, DiscoveryV1Api
from kubernetes.client.exceptions import ApiException

from e2e.conftest import Mesh
from e2e.engine import EngineRunError
from e2e.fake_exoscale import admin_api
from e2e.kube import HELM_RELEASE, client_for, decoded_secret, helm_list
from e2e.snapshots import admin_views, program_objects
from e2e.timing import blocking_edges

REMOTE_SECRET_LABEL = "istio/multiCluster"
POLICY_PACK = "sks-istio-mesh-invariants"  # policy/__main__.py names it


def test_the_first_preview_shows_only_creates_and_the_policy_pack_ran(mesh: Mesh):
    preview = mesh.first_preview
    assert set(preview.summary) == {"create"}, preview.summary
    assert set(preview.created) == set(mesh.first_run.created), "up created other than the preview showed"
    assert mesh.first_run.summary == preview.summary
    assert re.search(rf"\+ {preview.summary['create']} to create", preview.text), preview.text[-800:]
    for report in (preview, mesh.first_run):
        assert [p for p in report.policy_packs if p.split("|")[0] == POLICY_PACK], report.policy_packs


def test_the_policy_pack_runs_in_the_engine_and_can_stop_a_deploy(mesh: Mesh, tmp_path: Path):
    """The same pack, told by its own config that this stack is production, refuses the dev
    stack's starter clusters: the engine fails the preview with the pack's violation."""
    policy_config = tmp_path / "policy-config.json"
    policy_config.write_text(json.dumps({"prod-pro-service-level-and-3-nodes": {"prodStacks": ["dev"]}}))
    with pytest.raises(EngineRunError) as refused:
        mesh.engine.preview(mesh.config, "policy-refusal", policy_config)
    events = refused.value.report.policy_events
    violations = [e for e in events if e.policy_name == "prod-pro-service-level-and-3-nodes"]
    assert violations and all(e.enforcement_level == "mandatory" for e in violations), events
    assert any("starter" in e.message for e in violations), [e.message for e in violations]


def test_the_first_up_only_created_and_every_workload_waited_for_its_cluster_s_nodes(mesh: Mesh):
    """Seen failing: without `args.nodes_ready` in the istiod release's depends_on
    (components/istio.py) the release waits for no nodepool."""
    run = mesh.first_run
    assert set(run.summary) == {"create"}, run.summary
    resources = mesh.engine.resources()
    edges = blocking_edges(resources)
    # The engine started each resource only after what it waits for had finished (its events).
    for urn, step in run.steps.items():
        for dependency in edges.get(urn, ()):
            before = run.steps.get(dependency)
            if before is not None:
                assert before.ended is not None and before.ended <= step.started + 1e-3, (
                    f"{urn} started before {dependency} had finished")
    # The program makes workloads wait for their nodes: each Deployment, Job and istiod/gateway release
    # waits (through the engine's recorded dependencies) for a nodepool, and started after it was created.
    nodepools = {s.urn for s in run.steps.values() if s.type == "exoscale:index/sksNodepool:SksNodepool"}
    assert len(nodepools) == len(mesh.control_planes)
    workloads = [s for s in run.steps.values()
                 if s.type in ("kubernetes:apps/v1:Deployment", "kubernetes:batch/v1:Job")
                 or (s.type == HELM_RELEASE and not s.name.endswith("base"))]
    assert len(workloads) >= 2 * len(mesh.control_planes)
    for step in workloads:
        waited = _reachable(edges, step.urn) & nodepools
        assert waited, f"{step.urn} waits for no nodepool"
        for nodepool in waited:
            ended = run.steps[nodepool].ended
            assert ended is not None and ended <= step.started + 1e-3, f"{step.urn} started before {nodepool} existed"
    # Every object the engine recorded is live in the API server its provider names, same uid.
    views = admin_views(mesh)
    by_urn = {r["urn"]: r for r in resources}
    for urn, obj in program_objects(mesh).items():
        live = views[obj.cluster].get(obj.api_version, obj.kind, obj.name, obj.namespace or None)
        assert live is not None and live["metadata"]["uid"] == by_urn[urn]["outputs"]["metadata"]["uid"], urn


def _reachable(edges: dict[str, set[str]], urn: str) -> set[str]:
    seen: set[str] = set()
    pending = list(edges.get(urn, ()))
    while pending:
        current = pending.pop()
        if current not in seen:
            seen.add(current)
            pending.extend(edges.get(current, ()))
    return seen


def _live_secrets(mesh: Mesh) -> list[str]:
    """Every secret value the deploy put into the clusters or handed out: CA keys, reader tokens,
    remote-secret kubeconfigs, and the admin kubeconfigs' client keys (read from the API servers
    and the exported kubeconfig output, not from the program)."""
    values: list[str] = []
    for control_plane in mesh.control_planes.values():
        core = CoreV1Api(admin_api(control_plane))
        for secret in core.list_namespaced_secret("istio-system").items:
            for key, value in (secret.data or {}).items():
                text = base64.b64decode(value).decode(errors="replace")
                if key in ("ca-key.pem", "token") or (secret.metadata.labels and REMOTE_SECRET_LABEL in (
                        secret.metadata.labels or {})):
                    values.append(text)
    return values


def test_the_stack_state_holds_no_private_key_token_or_kubeconfig_in_plaintext(mesh: Mesh):
    """The backend's files (checkpoint, backups, history) and `pulumi stack export` as a CI log
    would show it. Seen failing: exporting `pulumi.Output.unsecret(mesh.kubeconfig)` in
    __main__.py puts the admin kubeconfig in plaintext."""
    secrets = _live_secrets(mesh)
    assert len(secrets) >= 3 * len(mesh.control_planes), "fewer secrets than CA keys, tokens and remote secrets"
    exported = mesh.engine.export_without_secrets()
    texts = {"pulumi stack export": exported}
    texts.update({str(p): p.read_text(errors="replace") for p in mesh.engine.raw_state_files()})
    assert any('"ciphertext"' in t for t in texts.values()), "no encrypted value in the state at all"
    for where, text in texts.items():
        assert "PRIVATE KEY-----" not in text, f"a private key in plaintext in {where}"
        assert "client-key-data" not in text and "token:" not in text, f"a kubeconfig in plaintext in {where}"
        for value in secrets:
            for form in (value, base64.b64encode(value.encode()).decode(), value.replace("\n", "\\n")):
                # Every value is long (keys, JWTs, kubeconfigs); a short one would match by chance.
                assert len(form) < 40 or form not in text, f"a live secret in plaintext in {where}"


def test_helm_installed_base_istiod_and_the_eastwest_gateway_in_every_cluster_and_waited(mesh: Mesh):
    for name, control_plane in mesh.control_planes.items():
        releases = helm_list(control_plane.admin_kubeconfig_path(), mesh.workdir)
        by_chart = {r["chart"].rsplit("-", 1)[0]: r for r in releases}
        assert set(by_chart) >= {"base", "istiod", "gateway"}, (name, releases)
        for release in by_chart.values():
            assert release["status"] == "deployed", (name, release)
            assert release["chart"].endswith(f"-{mesh.config['istioVersion']}"), release
        # --wait succeeded because the workloads really became available on the simulated nodes.
        apps = admin_api(control_plane)
        for deployment in ("istiod", "istio-eastwestgateway"):
            status = AppsV1Api(apps).read_namespaced_deployment(deployment, "istio-system").status
            assert status.available_replicas and status.available_replicas >= 1, (name, deployment)


def test_each_eastwest_service_got_its_own_nlb_address_from_the_fake_cloud_controller(mesh: Mesh):
    addresses = {}
    for name, control_plane in mesh.control_planes.items():
        service = CoreV1Api(admin_api(control_plane)).read_namespaced_service("istio-eastwestgateway", "istio-system")
        ingress = service.status.load_balancer.ingress
        assert ingress and ingress[0].ip.startswith("192.0.2."), (name, service.status)
        addresses[name] = ingress[0].ip
        assert {p.port for p in service.spec.ports} >= {15021, 15443}, name
    assert len(set(addresses.values())) == len(addresses), addresses
    exported = {name: c["eastwestGatewayIp"] for name, c in mesh.first_run.outputs["clusters"].items()}
    assert exported == addresses


def remote_secrets(mesh: Mesh, holder: str) -> dict[str, str]:
    """Remote cluster name -> kubeconfig, as stored in `holder`'s API server."""
    core = CoreV1Api(admin_api(mesh.control_planes[holder]))
    secrets = core.list_namespaced_secret("istio-system", label_selector=f"{REMOTE_SECRET_LABEL}=true").items
    found = {}
    for secret in secrets:
        for key, value in (secret.data or {}).items():
            found[key] = base64.b64decode(value).decode()
    return found


def test_every_remote_secret_authenticates_to_its_cluster_and_may_read_but_not_write(mesh: Mesh):
    names = list(mesh.control_planes)
    for holder in names:
        kubeconfigs = remote_secrets(mesh, holder)
        assert set(kubeconfigs) == set(names) - {holder}, (holder, sorted(kubeconfigs))
        for target, text in kubeconfigs.items():
            assert "client-certificate" not in text and "exec" not in text  # istiod rejects both
            reader = client_for(text)
            core, discovery = CoreV1Api(reader), DiscoveryV1Api(reader)
            # The API server that answers is the target's: its exo-demo/istio-system objects are there.
            assert core.read_namespace("istio-system").metadata.labels["topology.istio.io/network"] == next(
                c["network"] for c in mesh.config["clusters"] if c["name"] == target)
            assert core.list_service_for_all_namespaces().items
            assert discovery.list_endpoint_slice_for_all_namespaces().items
            assert core.list_pod_for_all_namespaces().items
            assert core.list_namespace().items
            with pytest.raises(ApiException) as denied:
                core.create_namespaced_config_map("default", {"metadata": {"name": "written-by-reader"}})
            assert denied.value.status == 403, f"{holder}'s secret for {target} may write"


def test_cacerts_read_back_from_each_api_server_verifies_against_the_stack_root_with_openssl(
    mesh: Mesh, tmp_path: Path
):
    root = tmp_path / "root.pem"
    root.write_text(mesh.first_run.outputs["rootCertPem"])
    for name, control_plane in mesh.control_planes.items():
        secret = CoreV1Api(admin_api(control_plane)).read_namespaced_secret("cacerts", "istio-system")
        files = decoded_secret(secret.to_dict())
        assert set(files) == {"ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"}
        assert files["root-cert.pem"] == root.read_text()
        cert = tmp_path / f"{name}-ca-cert.pem"
        cert.write_text(files["ca-cert.pem"])
        result = subprocess.run(["openssl", "verify", "-CAfile", str(root), str(cert)],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), (name, result.stdout,
                                                                                  result.stderr)
        # The key in the Secret is the intermediate certificate's key.
        key = tmp_path / f"{name}-ca-key.pem"
        key.write_text(files["ca-key.pem"])
        public_of_key = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout"], capture_output=True,
                                       text=True, check=True).stdout
        public_of_cert = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"],
                                        capture_output=True, text=True, check=True).stdout
        assert public_of_key == public_of_cert, name
