"""The real engine drives both stand-ins: `python -m e2e.providers.smoke` (needs e2e/.bin/pulumi).

An Automation API inline program (9 resources and the stack) with a TLS root and intermediate,
a security group with a rule, an anti-affinity group and an NLB: `up` creates them, a second `up`
changes nothing, a changed updatable input previews (and applies) as an update, a changed ForceNew
input as a replacement (with its dependents), the state holds no private key in plaintext, and
`destroy` leaves the fake cloud empty. Every verdict is the engine's own summary. About 20 s.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pulumi
import pulumi_tls as tls
import pulumiverse_exoscale as exoscale
from pulumi import automation as auto

from e2e.fake_exoscale import FakeExoscale

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "e2e" / "providers" / "bin"


def engine_environment(work: Path, cloud_url: str) -> dict[str, str]:
    return {
        "PATH": f"{BIN}:{ROOT / 'e2e' / '.bin'}:{os.environ['PATH']}",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_CONFIG_PASSPHRASE": "smoke",
        "PULUMI_HOME": str(work / "home"),
        "PULUMI_BACKEND_URL": f"file://{work / 'state'}",
        "EXOSCALE_API_ENDPOINT": cloud_url,
        "SKS_E2E_PYTHON": sys.executable,
    }


def program(settings: dict[str, Any]) -> None:
    key = tls.PrivateKey("root-key", algorithm="ECDSA", ecdsa_curve="P256")
    root = tls.SelfSignedCert(
        "root-cert", private_key_pem=key.private_key_pem,
        subject=tls.SelfSignedCertSubjectArgs(organization="Acme", common_name="Root CA"),
        is_ca_certificate=True, set_subject_key_id=True, allowed_uses=["cert_signing", "crl_signing"],
        validity_period_hours=settings["root_hours"])
    intermediate_key = tls.PrivateKey("intermediate-key", algorithm="RSA", rsa_bits=2048)
    request = tls.CertRequest(
        "intermediate-csr", private_key_pem=intermediate_key.private_key_pem,
        subject=tls.CertRequestSubjectArgs(organization="Acme", common_name="Intermediate CA"))
    tls.LocallySignedCert(
        "intermediate-cert", cert_request_pem=request.cert_request_pem, ca_cert_pem=root.cert_pem,
        ca_private_key_pem=key.private_key_pem, is_ca_certificate=True, allowed_uses=["cert_signing"],
        validity_period_hours=24)
    group = exoscale.SecurityGroup("nodes", name="smoke-nodes", description="smoke")
    exoscale.SecurityGroupRule("https", security_group_id=group.id, type="INGRESS", protocol="TCP",
                               start_port=443, end_port=443, cidr="0.0.0.0/0")
    exoscale.AntiAffinityGroup("spread", name="smoke-nodes")
    nlb = exoscale.Nlb("eastwest", zone="ch-gva-2", name="smoke-eastwest", description=settings["nlb"])
    pulumi.export("nlb_ip", nlb.ip_address)


def main() -> None:
    settings = {"root_hours": 48, "nlb": "first"}
    cloud = FakeExoscale({}, ccm=False)
    with tempfile.TemporaryDirectory(prefix="standin-smoke-") as directory:
        work = Path(directory)
        (work / "state").mkdir()
        (work / "home").mkdir()
        env = engine_environment(work, cloud.serve())
        os.environ["PATH"] = env["PATH"]  # the Automation API looks for `pulumi` on its own PATH
        stack = auto.create_or_select_stack(
            stack_name="smoke", project_name="standins", program=lambda: program(settings),
            opts=auto.LocalWorkspaceOptions(work_dir=directory, env_vars=env, project_settings=auto.ProjectSettings(
                name="standins", runtime="python", backend=auto.ProjectBackend(url=env["PULUMI_BACKEND_URL"]))))
        try:
            up = stack.up()
            assert up.summary.resource_changes == {"create": 10}, up.summary.resource_changes
            assert str(up.outputs["nlb_ip"].value).startswith("192.0.2.")
            assert stack.up().summary.resource_changes == {"same": 10}

            settings["nlb"] = "second"  # resource_exoscale_nlb.go: description is updated in place
            preview = stack.preview(diff=True)
            assert preview.change_summary == {"same": 9, "update": 1}, preview.stdout
            assert '~ description: "first" => "second"' in preview.stdout
            assert stack.up().summary.resource_changes == {"same": 9, "update": 1}

            settings["root_hours"] = 72  # validity_period_hours: RequiresReplace, and the chain with it
            preview = stack.preview(diff=True)
            assert preview.change_summary == {"same": 8, "replace": 2}, preview.stdout
            print(preview.stdout)
            assert stack.up().summary.resource_changes == {"same": 8, "replace": 2}

            raw = next((work / "state").rglob("smoke.json")).read_text()
            assert "PRIVATE KEY" not in raw, "a private key is in the state in plaintext"
            assert stack.destroy().summary.resource_changes == {"delete": 10}
            assert cloud.states == {}, cloud.states
            print(json.dumps({"cloud events": [f"{e.action} {e.kind}" for e in cloud.events]}, indent=1))
        finally:
            stack.workspace.remove_stack("smoke", force=True)
            cloud.close()


if __name__ == "__main__":
    main()
