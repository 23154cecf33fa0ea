"""One SKS cluster with everything its nodes need, and the Kubernetes provider that targets it."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumiverse_exoscale as exoscale

from components.config import ClusterSettings
from components.readiness import Readiness, readiness_of
from mesh_constants import CLUSTER_TYPE

ANYWHERE = "0.0.0.0/0"
NODEPORTS = (30000, 32767)


@dataclass(frozen=True)
class SecurityRule:
    """One ingress rule of the node security group (reference/exoscale-sks-and-pulumi.md §2)."""

    key: str
    protocol: str
    ports: tuple[int, int] | None = None
    from_own_group: bool = True
    icmp: tuple[int, int] | None = None
    description: str = ""


COMMON_RULES = (
    SecurityRule("kubelet", "TCP", (10250, 10250), description="kubelet API (logs, exec, metrics)"),
    SecurityRule("nodeport-tcp", "TCP", NODEPORTS, from_own_group=False,
                 description="NodePorts: NLB traffic keeps the client source IP"),
    SecurityRule("nodeport-udp", "UDP", NODEPORTS, from_own_group=False, description="NodePorts (UDP)"),
)
CNI_RULES: dict[str, tuple[SecurityRule, ...]] = {
    "calico": (SecurityRule("calico-vxlan", "UDP", (4789, 4789), description="Calico VXLAN overlay"),),
    "cilium": (
        SecurityRule("cilium-vxlan", "UDP", (8472, 8472), description="Cilium VXLAN overlay"),
        # Cilium's health checks use TCP 4240 (the upstream example's UDP rule is not enough).
        SecurityRule("cilium-health", "TCP", (4240, 4240), description="Cilium health checks"),
        SecurityRule("cilium-icmp", "ICMP", icmp=(8, 0), description="Cilium health (ICMP echo)"),
    ),
}


def security_rules_for(cni: str) -> tuple[SecurityRule, ...]:
    return COMMON_RULES + CNI_RULES[cni]


@dataclass(frozen=True)
class MeshClusterArgs:
    settings: ClusterSettings
    # Exoscale names are account-wide, so they carry the project and stack.
    name_prefix: str
    mesh_id: str
    kubeconfig_ttl_seconds: int
    kubeconfig_early_renewal_seconds: int
    protect: bool = False


class MeshCluster(pulumi.ComponentResource):
    """SKS cluster, node security group, anti-affinity group, nodepool, admin kubeconfig,
    the east-west gateway's NLB and an explicit Kubernetes provider."""

    # Shared with the components that deploy into this cluster (Pulumi's multi-cluster pattern).
    provider: k8s.Provider
    cluster_id: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]  # secret
    instance_pool_id: pulumi.Output[str]
    eastwest_nlb_id: pulumi.Output[str]
    eastwest_ip: pulumi.Output[str]
    # For `depends_on` of workloads: pods need nodes, and the provider does not wait for them.
    # The nodepool alone, so a workload waits for the nodes (and goes before them on destroy)
    # without waiting for the NLB or the kubeconfig.
    nodes_ready: Readiness

    def __init__(self, name: str, args: MeshClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(CLUSTER_TYPE, name, None, opts)
        settings = args.settings
        exoscale_name = f"{args.name_prefix}-{settings.name}"
        child = pulumi.ResourceOptions(parent=self)

        # The description is replace-on-change: replacing the group under running nodes for a
        # label would cut them off, so it says nothing that changes and older wording is kept.
        security_group = exoscale.SecurityGroup(
            f"{name}-nodes",
            name=f"{exoscale_name}-nodes",
            description=f"SKS nodes of {exoscale_name}",
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["description"]),
        )
        rules = [
            exoscale.SecurityGroupRule(
                f"{name}-{rule.key}",
                security_group_id=security_group.id,
                type="INGRESS",
                protocol=rule.protocol,
                start_port=rule.ports[0] if rule.ports else None,
                end_port=rule.ports[1] if rule.ports else None,
                icmp_type=rule.icmp[0] if rule.icmp else None,
                icmp_code=rule.icmp[1] if rule.icmp else None,
                user_security_group_id=security_group.id if rule.from_own_group else None,
                cidr=None if rule.from_own_group else ANYWHERE,
                description=rule.description,
                opts=child,
            )
            for rule in security_rules_for(settings.cni)
        ]
        anti_affinity = exoscale.AntiAffinityGroup(
            f"{name}-anti-affinity",
            name=f"{exoscale_name}-nodes",
            description=f"Spread the nodes of {exoscale_name} across hypervisors",
            opts=child,
        )
        cluster = exoscale.SksCluster(
            name,
            name=exoscale_name,
            zone=settings.zone,
            version=settings.kubernetes_version,
            cni=settings.cni,
            service_level=settings.service_level,
            exoscale_ccm=True,
            metrics_server=True,
            auto_upgrade=False,
            labels={"mesh": args.mesh_id, "managed-by": "pulumi"},
            description=f"Istio mesh {args.mesh_id}, network {settings.network}",
            # The provider only sets cni and service_level at creation and silently ignores a
            # change; replacing shows it in the preview (and `protect` refuses it). The name and
            # the east-west NLB stay, so the old cluster goes first.
            opts=pulumi.ResourceOptions(
                parent=self, protect=args.protect,
                replace_on_changes=["cni", "serviceLevel"], delete_before_replace=True,
            ),
        )
        nodepool = exoscale.SksNodepool(
            f"{name}-nodepool",
            cluster_id=cluster.id,
            zone=settings.zone,
            name=f"{exoscale_name}-default",
            instance_type=settings.nodepool.instance_type,
            size=settings.nodepool.size,
            disk_size=settings.nodepool.disk_size_gib,
            security_group_ids=[security_group.id],
            anti_affinity_group_ids=[anti_affinity.id],
            labels={"mesh": args.mesh_id},
            # The security rules must exist before nodes boot, or Calico's overlay stays down.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[security_group, *rules]),
        )
        kubeconfig = exoscale.SksKubeconfig(
            f"{name}-admin-kubeconfig",
            cluster_id=cluster.id,
            zone=settings.zone,
            user="kubernetes-admin",
            groups=["system:masters"],
            ttl_seconds=args.kubeconfig_ttl_seconds,
            early_renewal_seconds=args.kubeconfig_early_renewal_seconds,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["kubeconfig"]),
        )
        self.kubeconfig = pulumi.Output.secret(kubeconfig.kubeconfig)
        self.endpoint = cluster.endpoint

        # The east-west gateway's load balancer is owned here rather than by the cloud controller,
        # so `pulumi destroy` deletes it (after the gateway, before the nodepool it targets)
        # instead of leaving a billed NLB behind (terraform-provider-exoscale#210).
        eastwest_nlb = exoscale.Nlb(
            f"{name}-eastwest",
            zone=settings.zone,
            name=f"{exoscale_name}-eastwest",
            description=f"Istio east-west gateway of {exoscale_name}",
            labels={"mesh": args.mesh_id},
            # Destroy order: a nodepool cannot be deleted while an NLB service targets its
            # instance pool, and the CCM removes its services only asynchronously after the
            # gateway Service is gone; deleting the NLB (and its services) first unblocks it.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[nodepool]),
        )

        # cluster_identifier keeps the provider (and every object it manages) when the kubeconfig
        # is renewed. No wait for the nodepool: namespaces, Secrets, CRDs and RBAC need only the
        # API server, so they are applied while the nodes boot; workloads wait for `nodes_ready`
        # themselves, which also removes them before the nodes on destroy. Mutable Secrets: without
        # them a changed `cacerts` or remote secret is deleted and re-created under its fixed name,
        # so istiod's file watch misses a renewed intermediate and peers briefly lose a cluster.
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            cluster_identifier=cluster.id,
            enable_server_side_apply=True,
            enable_secret_mutable=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.cluster_id = cluster.id
        self.instance_pool_id = nodepool.instance_pool_id
        self.eastwest_nlb_id = eastwest_nlb.id
        self.eastwest_ip = eastwest_nlb.ip_address
        self.nodes_ready = readiness_of(nodepool)
        self.register_outputs({
            "endpoint": self.endpoint,
            "cluster_id": self.cluster_id,
            "instance_pool_id": self.instance_pool_id,
            "eastwest_ip": self.eastwest_ip,
        })
