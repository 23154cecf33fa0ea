"""Names the program creates and the policy pack (policy/) checks, declared once for both.

The policy pack imports this module too, so it stays free of Pulumi and pydantic imports.
"""

PROJECT = "sks-istio-mesh"

# Component type tokens: `<package>:index:<Type>` (Pulumi's component convention).
MESH_TYPE = f"{PROJECT}:index:Mesh"
CLUSTER_TYPE = f"{PROJECT}:index:MeshCluster"
PKI_TYPE = f"{PROJECT}:index:MeshPki"
CONTROL_PLANE_TYPE = f"{PROJECT}:index:IstioControlPlane"
EASTWEST_GATEWAY_TYPE = f"{PROJECT}:index:EastWestGateway"
REMOTE_SECRETS_TYPE = f"{PROJECT}:index:RemoteSecrets"
DEMO_APP_TYPE = f"{PROJECT}:index:DemoApp"
SMOKE_TEST_TYPE = f"{PROJECT}:index:SmokeTest"
DEMO_INGRESS_TYPE = f"{PROJECT}:index:DemoIngress"

# Provider resource type tokens the policies and tests look for.
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
SERVICE = "kubernetes:core/v1:Service"
SECRET = "kubernetes:core/v1:Secret"
LOCALLY_SIGNED_CERT = "tls:index/locallySignedCert:LocallySignedCert"
SELF_SIGNED_CERT = "tls:index/selfSignedCert:SelfSignedCert"
SKS_CLUSTER = "exoscale:index/sksCluster:SksCluster"
SKS_NODEPOOL = "exoscale:index/sksNodepool:SksNodepool"
NLB = "exoscale:index/nlb:Nlb"

# The gateways that may own a load balancer: the east-west gateway and the demo's optional ingress.
EASTWEST_GATEWAY = "istio-eastwestgateway"
INGRESS_GATEWAY = "istio-ingressgateway"
# Annotation prefix of Exoscale's cloud controller for Services of type LoadBalancer.
CCM_ANNOTATION = "service.beta.kubernetes.io/exoscale-loadbalancer-"
