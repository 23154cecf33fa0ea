"""sks-istio-mesh: N Exoscale SKS clusters joined into one multi-primary, multi-network Istio mesh."""

import sys
from pathlib import Path

import pulumi

# The components package sits beside this file, wherever the program is launched from.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from components.mesh import build_mesh
from components.stack_config import load_settings, root_ca_key

settings = load_settings()
mesh = build_mesh(settings, pulumi.get_stack(), root_key_pem=root_ca_key())

pulumi.export("clusters", {
    name: {
        "endpoint": cluster.endpoint,
        "zone": settings.cluster(name).zone,
        "network": settings.cluster(name).network,
        "eastwestGatewayIp": cluster.eastwest_nlb.ip_address,
    }
    for name, cluster in mesh.clusters.items()
})
pulumi.export("kubeconfig", mesh.merged_kubeconfig)
pulumi.export("rootCertPem", mesh.pki.root_cert_pem)
pulumi.export("istioVersion", settings.istio_version)
pulumi.export("meshId", settings.mesh_id)
if mesh.demo is not None:
    pulumi.export("demoCurlCommand", mesh.demo.curl_command)
    if mesh.demo.ingress_url is not None:
        pulumi.export("demoIngressUrl", mesh.demo.ingress_url)
