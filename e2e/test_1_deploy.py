"""Issue 11: the dev stack's first `up` against real API servers and real Helm."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from kubernetes.client import AppsV1Api, CoreV1Api, DiscoveryV1Api
from kubernetes.client.exceptions import ApiException

from e2e.conftest import Mesh
from e2e.fake_exoscale import admin_api
from e2e.twin import HELM_RELEASE, client_for, decoded_secret

REMOTE_SECRET_LABEL = "istio/multiCluster"


def k8s_entries(mesh: Mesh) -> list:
    return [e for e in mesh.twin.state.values() if e.type.startswith("kubernetes:") and e.custom]


def test_every_kubernetes_resource_was_accepted_after_everything_it_depends_on(mesh: Mesh):
    entries = k8s_entries(mesh)
    # Per cluster: namespace, cacerts, 3 releases, 2 Istio objects, reader token, remote secret, demo
    # namespace; plus exo-webtest Deployment + Service, curl Deployment and the smoke-test Job.
    assert len(entries) >= 10 * len(mesh.control_planes) + 4, sorted(e.urn for e in entries)
    finished = mesh.twin.completion_order
    for entry in entries:
        for dependency in mesh.twin.dependency_urns(entry):
            assert finished.index(dependency) < mesh.twin.started_after[entry.urn], (
                f"{entry.urn} was applied before {dependency} had finished")
    # Every object the twin applied is live in the API server its provider names.
    for entry in entries:
        if entry.type == HELM_RELEASE:
            continue
        cluster = mesh.twin.cluster_of(entry)
        metadata = entry.outputs["metadata"]
        live = cluster.get(entry.outputs["apiVersion"], entry.outputs["kind"], metadata["name"],
                           metadata.get("namespace"))
        assert live is not None and live["metadata"]["uid"] == metadata["uid"], entry.urn


def test_helm_installed_base_istiod_and_the_eastwest_gateway_in_every_cluster_and_waited(mesh: Mesh):
    for name, control_plane in mesh.control_planes.items():
        releases = mesh.twin.helm_list(control_plane.admin_kubeconfig_path())
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
