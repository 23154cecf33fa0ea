"""`pulumi-resource-exoscale` stand-in: a client of the fake cloud API that the test session
serves (e2e/fake_exoscale.py) at `EXOSCALE_API_ENDPOINT`.

Replace rules follow exoscale/terraform-provider-exoscale v0.66.0 (bridged by pulumiverse-exoscale
0.66.1), file and attribute cited next to each input: `ForceNew: true` -> REPLACE; an attribute
the resource's Update function applies (`d.HasChange(...)`) -> UPDATE; neither -> IGNORED (the
real Update does not send it and Read puts the cloud's value back, so the change shows in every
diff and never happens: SKS `cni` and `service_level`, "may only be set at creation time").
A resource without an UpdateContext has every input ForceNew.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import urllib.error
import urllib.request
from typing import Any

import yaml
from cryptography import x509

from e2e.providers.base import UNKNOWN, Handler, Rule, Schema, StandInProvider, serve

VERSION = "0.66.1"  # the pulumiverse_exoscale SDK's version: the plugin version it asks the engine for
ENDPOINT_VARIABLE = "EXOSCALE_API_ENDPOINT"
R, U, IGNORED = Rule.REPLACE, Rule.UPDATE, Rule.IGNORED

SECURITY_GROUP = Schema(
    token="exoscale:index/securityGroup:SecurityGroup",
    inputs={  # exoscale/resource_exoscale_security_group.go
        "name": R,  # resSecurityGroupAttrName: ForceNew
        "description": R,  # resSecurityGroupAttrDescription: ForceNew
        "externalSources": U,  # resourceSecurityGroupUpdate: HasChange(external_sources)
    },
    required=frozenset({"name"}),
    sets=frozenset({"externalSources"}),
)
SECURITY_GROUP_RULE = Schema(
    token="exoscale:index/securityGroupRule:SecurityGroupRule",
    inputs={  # exoscale/resource_exoscale_security_group_rule.go: no UpdateContext, every attribute ForceNew
        "cidr": R,  # resSecurityGroupRuleAttrNetwork: ForceNew
        "description": R,  # resSecurityGroupRuleAttrDescription: ForceNew
        "endPort": R,  # resSecurityGroupRuleAttrEndPort: ForceNew
        "type": R,  # resSecurityGroupRuleAttrFlowDirection: ForceNew
        "icmpCode": R,  # resSecurityGroupRuleAttrICMPCode: ForceNew
        "icmpType": R,  # resSecurityGroupRuleAttrICMPType: ForceNew
        "protocol": R,  # resSecurityGroupRuleAttrProtocol: ForceNew, Default "TCP"
        "publicSecurityGroup": R,  # resSecurityGroupRuleAttrPublicSecurityGroup: Optional+Computed, ForceNew
        "securityGroupId": R,  # resSecurityGroupRuleAttrSecurityGroupID: Optional+Computed, ForceNew
        "securityGroup": R,  # resSecurityGroupRuleAttrSecurityGroupName: Optional+Computed, ForceNew
        "startPort": R,  # resSecurityGroupRuleAttrStartPort: ForceNew
        "userSecurityGroupId": R,  # resSecurityGroupRuleAttrUserSecurityGroupID: ForceNew
        "userSecurityGroup": R,  # resSecurityGroupRuleAttrUserSecurityGroupName: Optional+Computed, ForceNew
    },
    defaults={"protocol": "TCP"},
    required=frozenset({"type"}),
    choices={"type": ("INGRESS", "EGRESS"),
             "protocol": ("TCP", "UDP", "ICMP", "ICMPv6", "AH", "ESP", "GRE", "IPIP", "ALL")},
    optional_computed=frozenset({"publicSecurityGroup", "securityGroupId", "securityGroup", "userSecurityGroup"}),
    computed=frozenset({"publicSecurityGroup", "securityGroup", "userSecurityGroup"}),
)
ANTI_AFFINITY_GROUP = Schema(
    token="exoscale:index/antiAffinityGroup:AntiAffinityGroup",
    inputs={  # pkg/resources/anti_affinity_group/resource.go: no UpdateContext
        "name": R,  # AttrName: ForceNew
        "description": R,  # AttrDescription: ForceNew
    },
    required=frozenset({"name"}),
)
SKS_CLUSTER = Schema(
    token="exoscale:index/sksCluster:SksCluster",
    inputs={  # exoscale/resource_exoscale_sks_cluster.go, resourceSKSClusterUpdate's HasChange branches for U
        "addons": IGNORED,  # resSKSClusterAttrAddons: Optional+Computed (deprecated), not updated
        "audit": U,  # HasChange(audit.*)
        "autoUpgrade": U,  # HasChange(resSKSClusterAttrAutoUpgrade)
        "cni": IGNORED,  # resSKSClusterAttrCNI: Default "calico", not ForceNew, not updated
        "description": U,  # HasChange(resSKSClusterAttrDescription)
        "enableKubeProxy": R,  # resSKSClusterAttrEnableKubeProxy: Optional+Computed, ForceNew
        "exoscaleCcm": IGNORED,  # resSKSClusterAttrExoscaleCCM: Default true, not updated
        "exoscaleCsi": U,  # HasChange(resSKSClusterAttrExoscaleCSI)
        "featureGates": U,  # HasChange(resSKSClusterAttrFeatureGates)
        "labels": U,  # HasChange(resSKSClusterAttrLabels)
        "metricsServer": IGNORED,  # resSKSClusterAttrMetricsServer: Default true, not updated
        "name": U,  # HasChange(resSKSClusterAttrName)
        "oidc": IGNORED,  # "oidc": Optional+Computed, not updated
        "serviceLevel": IGNORED,  # resSKSClusterAttrServiceLevel: Default "pro", "may only be set at creation"
        "version": U,  # HasChange(resSKSClusterAttrVersion): a control plane upgrade
        "zone": R,  # resSKSClusterAttrZone: ForceNew
    },
    defaults={"cni": "calico", "exoscaleCcm": True, "metricsServer": True, "exoscaleCsi": False,
              "serviceLevel": "pro"},
    required=frozenset({"name", "zone"}),
    sets=frozenset({"addons", "featureGates"}),
    optional_computed=frozenset({"addons", "enableKubeProxy", "oidc", "version"}),
    computed=frozenset({"aggregationCa", "controlPlaneCa", "createdAt", "endpoint", "kubeletCa", "nodepools",
                        "state", "version", "addons", "enableKubeProxy"}),
)
SKS_NODEPOOL = Schema(
    token="exoscale:index/sksNodepool:SksNodepool",
    inputs={  # exoscale/resource_exoscale_sks_nodepool.go, resourceSKSNodepoolUpdate's HasChange branches for U
        "antiAffinityGroupIds": U,  # HasChange(resSKSNodepoolAttrAntiAffinityGroupIDs)
        "clusterId": R,  # resSKSNodepoolAttrClusterID: ForceNew
        "deployTargetId": U,  # HasChange(resSKSNodepoolAttrDeployTargetID)
        "description": U,  # HasChange(resSKSNodepoolAttrDescription)
        "diskSize": U,  # HasChange(resSKSNodepoolAttrDiskSize), Default 50
        "instancePrefix": U,  # HasChange(resSKSNodepoolAttrInstancePrefix), Default "pool"
        "instanceType": U,  # HasChange(resSKSNodepoolAttrInstanceType)
        "ipv6": U,  # HasChange(resSKSNOdepoolAttrIPV6Enabled), Default false
        "kubeletImageGcs": IGNORED,  # resSKSNodepoolAttrKubeletGC: not ForceNew, not updated
        "labels": U,  # HasChange(resSKSNodepoolAttrLabels)
        "name": U,  # HasChange(resSKSNodepoolAttrName)
        "privateNetworkIds": U,  # HasChange(resSKSNodepoolAttrPrivateNetworkIDs)
        "securityGroupIds": U,  # HasChange(resSKSNodepoolAttrSecurityGroupIDs)
        "size": U,  # HasChange(resSKSNodepoolAttrSize): scales the instance pool
        "storageLvm": IGNORED,  # resSKSNodepoolAttrStorageLVM: Default false, not updated
        "taints": U,  # HasChange(resSKSNodepoolAttrTaints)
        "zone": R,  # resSKSNodepoolAttrZone: ForceNew
    },
    defaults={"diskSize": 50, "instancePrefix": "pool", "ipv6": False, "storageLvm": False},
    required=frozenset({"clusterId", "instanceType", "name", "size", "zone"}),
    sets=frozenset({"antiAffinityGroupIds", "privateNetworkIds", "securityGroupIds", "kubeletImageGcs"}),
    computed=frozenset({"createdAt", "instancePoolId", "state", "templateId", "version"}),
)
SKS_KUBECONFIG = Schema(
    token="exoscale:index/sksKubeconfig:SksKubeconfig",
    inputs={  # exoscale/resource_exoscale_sks_kubeconfig.go (Update is a no-op Read)
        "clusterId": R,  # resSKSKubeconfigAttrClusterID: ForceNew
        "earlyRenewalSeconds": U,  # resSKSKubeconfigAttrEarlyRenewalSeconds: Default 0, not ForceNew
        "groups": R,  # resSKSKubeconfigAttrGroups: ForceNew (a set)
        "ttlSeconds": R,  # resSKSKubeconfigAttrTTLSeconds: ForceNew, Default 30 days
        "user": R,  # resSKSKubeconfigAttrUser: ForceNew
        "zone": R,  # resSKSKubeconfigAttrZone: ForceNew
    },
    defaults={"earlyRenewalSeconds": 0, "ttlSeconds": 30 * 24 * 3600},
    required=frozenset({"clusterId", "user", "zone"}),
    sets=frozenset({"groups"}),
    computed=frozenset({"kubeconfig", "readyForRenewal"}),
    secret_outputs=frozenset({"kubeconfig"}),
)
NLB = Schema(
    token="exoscale:index/nlb:Nlb",
    inputs={  # exoscale/resource_exoscale_nlb.go, resourceNLBUpdate's HasChange branches for U
        "description": U,  # HasChange(resNLBAttrDescription)
        "labels": U,  # HasChange(resNLBAttrLabels)
        "name": U,  # HasChange(resNLBAttrName)
        "zone": R,  # resNLBAttrZone: ForceNew
    },
    required=frozenset({"name", "zone"}),
    computed=frozenset({"createdAt", "ipAddress", "services", "state"}),
)


class CloudError(RuntimeError):
    """The fake cloud API refused or failed a call; the engine shows the message."""


class CloudClient:
    def __init__(self, endpoint: str | None = None) -> None:
        self.endpoint = endpoint

    def _url(self, *parts: str) -> str:
        endpoint = self.endpoint or os.environ.get(ENDPOINT_VARIABLE)
        if not endpoint:
            raise CloudError(f"{ENDPOINT_VARIABLE} is not set: the Exoscale stand-in needs the fake cloud "
                             "API that the e2e session serves (FakeExoscale.serve())")
        if not endpoint.startswith("http://127.0.0.1:"):
            raise CloudError(f"{ENDPOINT_VARIABLE}={endpoint!r}: the stand-in only talks to a loopback fake")
        return "/".join([endpoint.rstrip("/"), "v1", *parts])

    def call(self, method: str, *parts: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self._url(*parts), data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            message = json.loads(error.read() or b"{}").get("message", error.reason)
            if error.code == 404 and method == "GET":
                return None
            raise CloudError(f"{method} {'/'.join(parts)}: {error.code} {message}") from None
        return json.loads(payload) if payload else None


class CloudHandler(Handler):
    def __init__(self, schema: Schema, client: CloudClient) -> None:
        self.schema = schema
        self.kind = schema.token.rsplit(":", 1)[-1]
        self.client = client

    def create(self, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        answer = self.client.call("POST", self.kind, body={"name": inputs.get("name", ""), "inputs": inputs})
        return answer["id"], answer["outputs"]

    def update(self, resource_id: str, olds: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        return self.client.call("PATCH", self.kind, resource_id, body={"changes": changes})

    def delete(self, resource_id: str, state: dict[str, Any]) -> None:
        self.client.call("DELETE", self.kind, resource_id)

    def read(self, resource_id: str, state: dict[str, Any]) -> dict[str, Any] | None:
        return self.client.call("GET", self.kind, resource_id)


def kubeconfig_certificates(kubeconfig: str) -> list[x509.Certificate]:
    """KubeconfigExtractCertificates: every cluster CA and every client certificate."""
    document = yaml.safe_load(kubeconfig) or {}
    blobs = [c["cluster"]["certificate-authority-data"] for c in document.get("clusters", [])]
    blobs += [u["user"]["client-certificate-data"] for u in document.get("users", [])]
    return [x509.load_pem_x509_certificate(base64.b64decode(blob)) for blob in blobs]


def kubeconfig_ready_for_renewal(kubeconfig: str | None, early_renewal_seconds: int,
                                 at: datetime.datetime) -> bool:
    """resourceSKSKubeconfigDiff: ready when there is no kubeconfig, or when any of its
    certificates' NotAfter - early_renewal_seconds has come."""
    if not kubeconfig:
        return True
    early = datetime.timedelta(seconds=early_renewal_seconds)
    return any(cert.not_valid_after_utc - early <= at for cert in kubeconfig_certificates(kubeconfig))


class KubeconfigHandler(CloudHandler):
    # Read and Update of the real resource do nothing (resourceSKSKubeconfigRead returns nil): the
    # kubeconfig is never fetched again, and renewal happens only through the diff below.
    def read(self, resource_id: str, state: dict[str, Any]) -> dict[str, Any] | None:
        return state

    def update(self, resource_id: str, olds: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        return {**olds, **changes}

    def delete(self, resource_id: str, state: dict[str, Any]) -> None:
        # "no revocation: we rely on client certificate expiration"; the fake records the delete.
        self.client.call("DELETE", self.kind, resource_id)

    def replace_reasons(self, olds: dict[str, Any], news: dict[str, Any]) -> dict[str, Any]:
        # CustomizeDiff: SetNew(ready_for_renewal, true) and ForceNew(ready_for_renewal).
        early = news.get("earlyRenewalSeconds", olds.get("earlyRenewalSeconds")) or 0
        if early is UNKNOWN:
            return {}
        now = datetime.datetime.now(datetime.UTC)
        if kubeconfig_ready_for_renewal(olds.get("kubeconfig"), int(early), now):
            return {"readyForRenewal": True}
        return {}


def provider(client: CloudClient | None = None) -> StandInProvider:
    client = client or CloudClient()
    schemas = (SECURITY_GROUP, SECURITY_GROUP_RULE, ANTI_AFFINITY_GROUP, SKS_CLUSTER, SKS_NODEPOOL, NLB)
    return StandInProvider([*(CloudHandler(schema, client) for schema in schemas),
                            KubeconfigHandler(SKS_KUBECONFIG, client)])


if __name__ == "__main__":
    serve(VERSION, provider)
