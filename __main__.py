"""sks-istio-mesh: N Exoscale SKS clusters joined into one multi-primary, multi-network Istio mesh."""

import sys
from pathlib import Path

import pulumi

# The components package sits beside this file, wherever the program is launched from.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from components.mesh import Mesh, MeshArgs
from components.rotation import STATE_OUTPUT
from components.stack_config import load_settings, root_ca_key

settings = load_settings()
mesh = Mesh("mesh", MeshArgs(settings=settings, stack=pulumi.get_stack(), root_key_pem=root_ca_key(),
                             organization=pulumi.get_organization()))

pulumi.export("clusters", mesh.clusters)
pulumi.export("kubeconfig", mesh.kubeconfig)
pulumi.export("rootCertPem", mesh.root_cert_pem)
pulumi.export(STATE_OUTPUT, mesh.ca_state)
pulumi.export("istioVersion", settings.istio_version)
pulumi.export("meshId", settings.mesh_id)
if mesh.demo_curl_command is not None:
    pulumi.export("demoCurlCommand", mesh.demo_curl_command)
if mesh.demo_ingress_url is not None:
    pulumi.export("demoIngressUrl", mesh.demo_ingress_url)
