"""One SKS cluster with everything its nodes need, and the Kubernetes provider that targets it."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumiverse_exoscale as exoscale

from components.config import ClusterSettings

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

    provider: k8s.Provider
    endpoint: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    eastwest_nlb: exoscale.Nlb
    nodepool: exoscale.SksNodepool

    def __init__(self, name: str, args: MeshClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("sks-istio-mesh:cluster:MeshCluster", name, None, opts)
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
        self.nodepool = exoscale.SksNodepool(
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
        self.eastwest_nlb = exoscale.Nlb(
            f"{name}-eastwest",
            zone=settings.zone,
            name=f"{exoscale_name}-eastwest",
            description=f"Istio east-west gateway of {exoscale_name}",
            labels={"mesh": args.mesh_id},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.nodepool]),
        )

        # cluster_identifier keeps the provider (and every object it manages) when the kubeconfig
        # is renewed; depending on the nodepool makes workloads wait for nodes on create and go
        # away before the nodes on destroy. Mutable Secrets: without them a changed `cacerts` or
        # remote secret is deleted and re-created under its fixed name, so istiod's file watch
        # misses a renewed intermediate and peers briefly lose a cluster.
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            cluster_identifier=cluster.id,
            enable_server_side_apply=True,
            enable_secret_mutable=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.nodepool]),
        )
        self.cluster_id = cluster.id
        self.instance_pool_id = self.nodepool.instance_pool_id
        self.register_outputs({
            "endpoint": self.endpoint,
            "cluster_id": self.cluster_id,
            "instance_pool_id": self.instance_pool_id,
            "eastwest_ip": self.eastwest_nlb.ip_address,
        })
