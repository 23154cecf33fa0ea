"""Remote secrets: every istiod reads every other cluster's API with the reader service account.

Replaces `istioctl create-remote-secret | kubectl apply` (reference/istio-multicluster.md §6).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.istio import READER_TOKEN_SECRET
from mesh_constants import REMOTE_SECRETS_TYPE

MULTICLUSTER_LABEL = "istio/multiCluster"
CLUSTER_ANNOTATION = "networking.istio.io/cluster"


@dataclass(frozen=True)
class RemoteCluster:
    """What peers need to reach one cluster, and the provider to write secrets into it."""

    name: str
    endpoint: pulumi.Input[str]
    provider: k8s.Provider
    # The base64 `data` of the reader service account's token Secret (keys `token`, `ca.crt`).
    reader_token_data: pulumi.Input[Mapping[str, str]]
    namespace: pulumi.Input[str]
    # The cluster's control plane: istiod's release grants the reader account its RBAC, and peers'
    # secrets wait for it.
    reader_rbac: pulumi.Resource


@dataclass(frozen=True)
class RemoteSecretsArgs:
    clusters: tuple[RemoteCluster, ...]


def remote_secret_name(cluster_name: str) -> str:
    return f"istio-remote-secret-{cluster_name}"


def reader_kubeconfig(cluster_name: str, endpoint: str, token_data: Mapping[str, str] | None) -> str:
    """A kubeconfig for istiod with inline CA and bearer token only: no exec plugins or files,
    which istiod rejects (istio/istio#36307).

    The CA is the one the token controller writes beside the token (the CA that signs the API
    server's certificate); without it or the token, peers' istiods would fail at runtime with TLS
    errors or 401s, so the deploy stops here instead."""
    token_data = token_data or {}
    missing = [key for key in ("token", "ca.crt") if not token_data.get(key)]
    if missing:
        raise pulumi.RunError(
            f"cluster {cluster_name}: the reader token Secret {READER_TOKEN_SECRET} has no "
            + " and no ".join(f"`{key}`" for key in missing)
            + "; check that kube-controller-manager's token controller is running there, then run `pulumi up` again"
        )
    ca_data = token_data["ca.crt"]
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": cluster_name,
            "cluster": {"server": endpoint, "certificate-authority-data": ca_data},
        }],
        "users": [{
            "name": cluster_name,
            "user": {"token": base64.b64decode(token_data["token"]).decode()},
        }],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
        "current-context": cluster_name,
        "preferences": {},
    }
    return yaml.safe_dump(document, sort_keys=False)


class RemoteSecrets(pulumi.ComponentResource):
    """N(N-1) secrets: in cluster A, one `istio-remote-secret-<B>` for every other cluster B."""

    # "<holder>/<target>" for every secret: in cluster <holder>, the one pointing at <target>.
    secret_names: list[str]
    # Per target cluster, the API server CA (base64 PEM) its secrets trust: public, unlike the token.
    target_cas: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: RemoteSecretsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(REMOTE_SECRETS_TYPE, name, None, opts)
        # One kubeconfig per target cluster, shared by the N-1 secrets that point at it.
        kubeconfigs = {
            target.name: pulumi.Output.secret(
                pulumi.Output.all(target.endpoint, target.reader_token_data).apply(
                    lambda values, cluster=target.name: reader_kubeconfig(cluster, *values)
                )
            )
            for target in args.clusters
        }
        secrets: dict[tuple[str, str], k8s.core.v1.Secret] = {}
        for holder in args.clusters:
            for target in args.clusters:
                if target.name == holder.name:
                    continue
                secrets[(holder.name, target.name)] = k8s.core.v1.Secret(
                    f"{holder.name}-{remote_secret_name(target.name)}",
                    metadata={
                        "name": remote_secret_name(target.name),
                        "namespace": holder.namespace,
                        "labels": {MULTICLUSTER_LABEL: "true"},
                        "annotations": {CLUSTER_ANNOTATION: target.name},
                    },
                    # The key must equal the remote cluster's clusterName, or istiod serves 503s.
                    string_data=kubeconfigs[target.name].apply(lambda kc, key=target.name: {key: kc}),
                    opts=pulumi.ResourceOptions(
                        parent=self,
                        provider=holder.provider,
                        depends_on=[target.reader_rbac],
                    ),
                )
        self.secret_names = [f"{holder}/{target}" for holder, target in secrets]
        # A CA certificate is public; only its place beside the token made it secret.
        self.target_cas = {
            target.name: pulumi.Output.unsecret(pulumi.Output.from_input(target.reader_token_data).apply(
                lambda data: (data or {}).get("ca.crt", "")))
            for target in args.clusters
        }
        self.register_outputs({"secret_names": self.secret_names, "target_cas": self.target_cas})
