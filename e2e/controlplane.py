"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, controller-manager,
scheduler and KWOK (simulated nodes and pods), each a child process stopped with the run.

Flags follow ../shared/reference/local-control-planes.md §2-§3 (seen working on this machine).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

E2E = Path(__file__).resolve().parent
BIN = E2E / ".bin"
# A fixed work root, so that a run finds what a killed earlier run left: one pid file per process
# started (`spawn`), reaped by the next run (`reap_leftovers`).
WORK = E2E / ".work"
PIDS = WORK / "pids"
KUBERNETES_VERSION = "v1.34.2"
SERVICE_CIDR = "10.96.0.0/16"
# KWOK's own Stage objects (v0.8.0 has no default stages out of cluster, §3): node start-up and
# heartbeat, pods Ready with an IP, Job pods Succeeded, and pods really deleted.
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat/node-heartbeat.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"


def spawn(argv: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        # A process group of its own, so a stop also ends anything it started.
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)
    record_pid(process.pid)
    return process


def record_pid(pid: int) -> None:
    """A pid file, so that the next run kills the process (and its group) if this run is killed."""
    PIDS.mkdir(parents=True, exist_ok=True)
    (PIDS / str(pid)).write_text(_start_time(pid))


def _start_time(pid: int) -> str:
    """The process's start time (/proc/<pid>/stat field 22): a pid file names that process only,
    not a later one that got the same pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def reap_leftovers() -> list[int]:
    """Kill (SIGKILL, the whole process group) every process a pid file names that still runs:
    left by a run that was killed before its own clean-up. Returns their pids."""
    reaped = []
    for pid_file in PIDS.glob("*") if PIDS.is_dir() else []:
        pid = int(pid_file.name)
        started = pid_file.read_text()
        if started and _start_time(pid) == started:
            try:
                os.killpg(pid, signal.SIGKILL)
                reaped.append(pid)
            except ProcessLookupError:
                pass
        pid_file.unlink()
    return reaped + _reap_strays()


def _reap_strays() -> list[int]:
    """Kill the processes working inside e2e/.work that no pid file names: the engine's plugins,
    which the Pulumi CLI starts in process groups of their own (so killing the CLI's group leaves
    them) with the project directory as their working directory. One run at a time holds e2e/.work
    (e2e/session.py), so whatever works there is this run's or a killed earlier run's."""
    reaped = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cwd = os.readlink(proc / "cwd").removesuffix(" (deleted)")
        except OSError:
            continue
        pid = int(proc.name)
        if pid != os.getpid() and (cwd == str(WORK) or cwd.startswith(f"{WORK}/")):
            try:
                os.kill(pid, signal.SIGKILL)
                reaped.append(pid)
            except ProcessLookupError:
                pass
    return reaped


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@dataclass(frozen=True)
class CertificateAuthority:
    """The cluster's own CA: it signs the API server's serving certificate and every client
    certificate, as the SKS control plane's CA does."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @property
    def cert_pem(self) -> str:
        return _pem(self.cert)

    def issue(
        self, common_name: str, organizations: tuple[str, ...] = (), *, server: bool = False,
        validity: datetime.timedelta = datetime.timedelta(days=30),
    ) -> tuple[str, str]:
        """A leaf certificate and its key (PEM): a client certificate whose CN is the user and
        whose O entries are the groups (Kubernetes' x509 authenticator), or a serving certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + validity)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            ), critical=False)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.DNSName("kubernetes.default.svc"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]), critical=False)
        return _pem(builder.sign(self.key, hashes.SHA256())), _key_pem(key)


def kubeconfig(server: str, ca_pem: str, user: str, cert_pem: str, key_pem: str, context: str = "default") -> str:
    """A kubeconfig with everything inline, the shape SKS hands out."""
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": user}}],
        "current-context": context,
    }, sort_keys=False)


@dataclass
class ControlPlane:
    """One cluster's control plane. `start()` returns once the API server is ready."""

    name: str
    workdir: Path
    kwok_stage_dir: Path
    ca: CertificateAuthority = field(init=False)
    port: int = field(init=False, default=0)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca = CertificateAuthority.create(f"{self.name} control plane CA")

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def admin_kubeconfig_path(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    def _write(self, name: str, text: str, mode: int = 0o600) -> str:
        path = self.workdir / name
        path.write_text(text)
        path.chmod(mode)
        return str(path)

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.processes.append(spawn(argv, self.workdir / f"{name}.log"))

    def start(self) -> None:
        etcd_port, etcd_peer_port, self.port = free_port(), free_port(), free_port()
        ca_file = self._write("ca.crt", self.ca.cert_pem)
        serving_cert, serving_key = self.ca.issue("kube-apiserver", server=True)
        sa_key = ec.generate_private_key(ec.SECP256R1())
        sa_key_file = self._write("sa.key", _key_pem(sa_key))
        sa_pub_file = self._write("sa.pub", sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())
        admin_cert, admin_key = self.ca.issue("e2e-admin", ("system:masters",))
        admin = self._write("admin.kubeconfig", kubeconfig(self.endpoint, self.ca.cert_pem, "e2e-admin",
                                                            admin_cert, admin_key))
        self._spawn("etcd", [
            str(BIN / "etcd"), "--name", "default", "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer_port}",
            "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer_port}",
            "--listen-metrics-urls", "", "--log-level", "warn",
            # A throwaway store: durability costs seconds per write on a busy 2-core machine.
            "--unsafe-no-fsync",
        ])
        self._spawn("kube-apiserver", [
            str(BIN / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--tls-cert-file={self._write('apiserver.crt', serving_cert)}",
            f"--tls-private-key-file={self._write('apiserver.key', serving_key)}",
            f"--client-ca-file={ca_file}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={sa_pub_file}", f"--service-account-signing-key-file={sa_key_file}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            # No pod network: webhook Services (Istio's injector and validator) are unreachable, and
            # their Fail policy would reject every pod and Istio object.
            "--disable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
            "--endpoint-reconciler-type=none",
            "--enable-priority-and-fairness=false",
        ])
        self._wait_ready()
        self._spawn("kube-controller-manager", [
            str(BIN / "kube-controller-manager"), f"--kubeconfig={admin}", "--leader-elect=false",
            # The private key turns the token controller on (service-account-token Secrets get filled).
            f"--service-account-private-key-file={sa_key_file}", f"--root-ca-file={ca_file}",
            "--use-service-account-credentials", "--secure-port=0",
        ])
        self._spawn("kube-scheduler", [
            str(BIN / "kube-scheduler"), f"--kubeconfig={admin}", "--leader-elect=false", "--secure-port=0",
        ])
        stages = self._write("kwok-stages.yaml", "\n---\n".join(
            (self.kwok_stage_dir / stage).read_text() for stage in KWOK_STAGES))
        self._spawn("kwok", [
            str(BIN / "kwok"), f"--kubeconfig={admin}", f"--config={stages}",
            "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            "--cidr=10.0.0.0/24", "--node-ip=10.0.0.1", "--node-port=0",
            f"--server-address=127.0.0.1:{free_port()}",
        ])

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca.cert_pem)
        cert, key = self.ca.issue("e2e-probe", ("system:masters",))
        context.load_cert_chain(self._write("probe.crt", cert), self._write("probe.key", key))
        return context

    def _wait_ready(self, timeout: float = 120) -> None:
        context = self._ssl_context()
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"{self.endpoint}/readyz", context=context, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: kube-apiserver not ready after {timeout:.0f} s "
                                   f"(logs in {self.workdir})")
            time.sleep(0.5)

    def check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                name = Path(str(process.args[0])).name  # type: ignore[index]
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name}: {name} exited with {process.returncode}:\n{tail}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()


def kwok_stage_dir() -> Path:
    """KWOK's stage manifests from its module in Go's module cache (never copied into the project)."""
    output = subprocess.run(
        ["go", "mod", "download", "-json", "sigs.k8s.io/kwok"],
        cwd=E2E / "tools" / "kwok", capture_output=True, text=True, check=True,
    ).stdout
    return Path(json.loads(output)["Dir"]) / "kustomize" / "stage"


def fake_node(name: str, cpu: str, memory: str, labels: dict[str, str]) -> dict[str, Any]:
    """A node that KWOK runs: annotated as fake, sized like the nodepool's instance type."""
    resources = {"cpu": cpu, "memory": memory, "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels},
                     "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"}},
        "status": {"capacity": resources, "allocatable": resources},
    }
