"""Stack configuration: a pure function from the raw config map to frozen dataclasses.

Nothing here touches Pulumi, so every rule is testable without a runtime, and a bad stack fails
before a single resource is registered.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

PROJECT = "sks-istio-mesh"

# Zones that offer SKS (egoscale v3 zone list; reference/exoscale-sks-and-pulumi.md §8).
EXOSCALE_ZONES = (
    "ch-gva-2",
    "ch-dk-2",
    "de-fra-1",
    "de-muc-1",
    "at-vie-1",
    "at-vie-2",
    "bg-sof-1",
    "hr-zag-1",
)
CNIS = ("calico", "cilium")
SERVICE_LEVELS = ("pro", "starter")
KEY_ALGORITHMS = ("RSA", "ECDSA")
# Exoscale instance sizes, smallest first. Istio's control plane and sidecars need at least a
# medium node (the Exoscale tutorial's minimum).
INSTANCE_SIZES = (
    "micro",
    "tiny",
    "small",
    "medium",
    "large",
    "extra-large",
    "huge",
    "mega",
    "titan",
    "jumbo",
    "colossus",
)
MINIMUM_INSTANCE_SIZE = "medium"
# An Exoscale anti-affinity group holds at most 8 instances.
MAX_NODEPOOL_SIZE = 8
# Istio's official Helm repository; air-gapped users point istioChartRepository at a mirror.
ISTIO_CHART_REPOSITORY = "https://istio-release.storage.googleapis.com/charts"
CHART_REPOSITORY_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
# The gateway chart labels its pods with the network only since Istio 1.26 (istio/istio#54909);
# older charts need the label by hand (reference/istio-multicluster.md §4, §10).
MINIMUM_ISTIO_VERSION = (1, 26, 0)

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
INSTANCE_TYPE = re.compile(r"^([a-z][a-z0-9]*)\.([a-z-]+)$")

DEFAULT_CLUSTERS: tuple[dict[str, Any], ...] = (
    {"name": "cluster1", "zone": "de-fra-1", "network": "network1"},
    {"name": "cluster2", "zone": "at-vie-2", "network": "network2"},
)


@dataclass(frozen=True)
class NodepoolSettings:
    instance_type: str = "standard.medium"
    size: int = 2
    disk_size_gib: int = 50


@dataclass(frozen=True)
class ClusterSettings:
    name: str
    zone: str
    network: str
    kubernetes_version: str | None = None
    cni: str = "calico"
    service_level: str = "pro"
    nodepool: NodepoolSettings = field(default_factory=NodepoolSettings)


@dataclass(frozen=True)
class PkiSettings:
    organization: str = "sks-istio-mesh"
    key_algorithm: str = "RSA"
    root_validity_hours: int = 87600  # ~10 years, like Istio's ROOTCA_DAYS
    intermediate_validity_hours: int = 17520  # ~2 years
    intermediate_early_renewal_hours: int = 720  # re-issue 30 days before expiry
    # The root only changes when this does: istiod needs a restart to trust a new root.
    root_generation: int = 1
    # Bring-your-own root: the certificate is public; its key is read as a Pulumi secret by
    # __main__.py and never passes through this module.
    root_cert_pem: str | None = None

    @property
    def bring_your_own_root(self) -> bool:
        return self.root_cert_pem is not None


@dataclass(frozen=True)
class DemoSettings:
    enabled: bool = True
    server_cluster: str = ""
    client_cluster: str = ""
    smoke_test: bool = True
    curl_image: str = "curlimages/curl:8.17.0"
    # Optional public ingress: cluster name -> share of traffic (percent); empty = no ingress.
    ingress_weights: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class HelmSettings:
    timeout_seconds: int = 900


@dataclass(frozen=True)
class MeshSettings:
    clusters: tuple[ClusterSettings, ...]
    mesh_id: str = "mesh1"
    istio_version: str = "1.30.3"
    istio_chart_repository: str = ISTIO_CHART_REPOSITORY
    mtls_strict: bool = True
    protect: bool = False
    kubeconfig_ttl_seconds: int = 30 * 24 * 3600
    kubeconfig_early_renewal_seconds: int = 7 * 24 * 3600
    pki: PkiSettings = field(default_factory=PkiSettings)
    demo: DemoSettings = field(default_factory=DemoSettings)
    helm: HelmSettings = field(default_factory=HelmSettings)

    def cluster(self, name: str) -> ClusterSettings:
        return next(cluster for cluster in self.clusters if cluster.name == name)


class ConfigError(ValueError):
    """Every problem found in the stack config, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class ConfigKey:
    """One documented config key; README's config table is checked against this list."""

    name: str
    type: str
    default: str
    allowed: str
    secret: bool = False
    # Where the parsed default lives in MeshSettings (dotted), so tests keep docs and code in step.
    attribute: str = ""


CONFIG_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("clusters", "list of objects", "cluster1 de-fra-1, cluster2 at-vie-2", "1+ clusters"),
    ConfigKey("clusters[].name", "string", "(required)", "DNS label, unique"),
    ConfigKey("clusters[].zone", "string", "(required)", ", ".join(EXOSCALE_ZONES)),
    ConfigKey("clusters[].network", "string", "network-<name>", "DNS label, unique per cluster"),
    ConfigKey("clusters[].kubernetesVersion", "string", "latest SKS version", "X.Y.Z"),
    ConfigKey("clusters[].cni", "string", "calico", ", ".join(CNIS)),
    ConfigKey("clusters[].serviceLevel", "string", "pro", ", ".join(SERVICE_LEVELS)),
    ConfigKey("clusters[].nodepool.instanceType", "string", "standard.medium", "<family>.<size>, size >= medium"),
    ConfigKey("clusters[].nodepool.size", "integer", "2", "1-8 (an anti-affinity group holds 8 instances)"),
    ConfigKey("clusters[].nodepool.diskSize", "integer", "50", "20-51200 (GiB)"),
    ConfigKey("meshId", "string", "mesh1", "DNS label", attribute="mesh_id"),
    ConfigKey("istioVersion", "string", "1.30.3", "X.Y.Z, >= 1.26.0", attribute="istio_version"),
    ConfigKey(
        "istioChartRepository",
        "string",
        ISTIO_CHART_REPOSITORY,
        "http(s) URL of a Helm repository serving the pinned charts",
        attribute="istio_chart_repository",
    ),
    ConfigKey("mtlsStrict", "boolean", "true", "true, false", attribute="mtls_strict"),
    ConfigKey("protect", "boolean", "false", "true, false", attribute="protect"),
    ConfigKey(
        "kubeconfigTtlSeconds",
        "integer",
        "2592000",
        "> kubeconfigEarlyRenewalSeconds",
        attribute="kubeconfig_ttl_seconds",
    ),
    ConfigKey(
        "kubeconfigEarlyRenewalSeconds", "integer", "604800", ">= 0", attribute="kubeconfig_early_renewal_seconds"
    ),
    ConfigKey("helmTimeoutSeconds", "integer", "900", "60-3600", attribute="helm.timeout_seconds"),
    ConfigKey("caOrganization", "string", "sks-istio-mesh", "non-empty", attribute="pki.organization"),
    ConfigKey("caKeyAlgorithm", "string", "RSA", ", ".join(KEY_ALGORITHMS), attribute="pki.key_algorithm"),
    ConfigKey(
        "rootCaValidityHours", "integer", "87600", "> intermediateCaValidityHours", attribute="pki.root_validity_hours"
    ),
    ConfigKey(
        "intermediateCaValidityHours",
        "integer",
        "17520",
        "> intermediateCaEarlyRenewalHours",
        attribute="pki.intermediate_validity_hours",
    ),
    ConfigKey(
        "intermediateCaEarlyRenewalHours", "integer", "720", ">= 0", attribute="pki.intermediate_early_renewal_hours"
    ),
    ConfigKey("rootCaGeneration", "integer", "1", ">= 1; raise to rotate the root", attribute="pki.root_generation"),
    ConfigKey("rootCaCertPem", "string", "(generated)", "PEM certificate; with rootCaKeyPem"),
    ConfigKey("rootCaKeyPem", "secret string", "(generated)", "PEM private key; set with --secret", secret=True),
    ConfigKey("demoEnabled", "boolean", "true", "true, false", attribute="demo.enabled"),
    ConfigKey("demoServerCluster", "string", "second cluster", "a cluster name"),
    ConfigKey("demoClientCluster", "string", "first cluster", "a cluster name"),
    ConfigKey("smokeTest", "boolean", "true", "true, false", attribute="demo.smoke_test"),
    ConfigKey("demoIngressWeights", "object", "{} (no ingress)", "cluster -> percent, summing to 100; not the client"),
    ConfigKey("curlImage", "string", DemoSettings.curl_image, "pinned image reference", attribute="demo.curl_image"),
)
TOP_LEVEL_KEYS = frozenset(k.name for k in CONFIG_KEYS if "." not in k.name and "[" not in k.name)
CLUSTER_KEYS = frozenset(
    k.name.removeprefix("clusters[].").split(".")[0] for k in CONFIG_KEYS if k.name.startswith("clusters[].")
)
NODEPOOL_KEYS = frozenset(
    k.name.removeprefix("clusters[].nodepool.") for k in CONFIG_KEYS if k.name.startswith("clusters[].nodepool.")
)


class _Reader:
    """Collects problems instead of stopping at the first, so one run shows every bad value."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, key: str, value: Any, allowed: str, secret: bool = False) -> None:
        shown = "(secret value)" if secret else json.dumps(value)
        self.problems.append(f"{PROJECT}:{key}: {shown} is not allowed; expected {allowed}")

    def decode(self, value: Any) -> Any:
        # Pulumi hands structured config to the program as JSON text.
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def string(
        self,
        raw: Mapping[str, Any],
        key: str,
        path: str,
        default: str | None,
        check: Callable[[str], bool] = lambda _: True,
        allowed: str = "a non-empty string",
    ) -> str | None:
        if key not in raw or raw[key] is None:
            return default
        value = raw[key]
        if not isinstance(value, str) or not value or not check(value):
            self.fail(path, value, allowed)
            return default
        return value

    def integer(
        self, raw: Mapping[str, Any], key: str, path: str, default: int, minimum: int, maximum: int | None = None
    ) -> int:
        if key not in raw or raw[key] is None:
            return default
        value = self.decode(raw[key])
        allowed = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            self.fail(path, raw[key], allowed)
            return default
        return value

    def boolean(self, raw: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        if key not in raw or raw[key] is None:
            return default
        value = self.decode(raw[key])
        if not isinstance(value, bool):
            self.fail(path, raw[key], "true or false")
            return default
        return value

    def unknown_keys(self, obj: Mapping[str, Any], known: frozenset[str], prefix: str) -> None:
        for key in sorted(set(obj) - known):
            self.problems.append(f"{PROJECT}:{prefix}{key}: unknown key; allowed keys are {', '.join(sorted(known))}")


def _version_tuple(version: str) -> tuple[int, int, int]:
    match = VERSION.match(version)
    assert match is not None
    return (int(match[1]), int(match[2]), int(match[3]))


def _instance_type_ok(value: str) -> bool:
    match = INSTANCE_TYPE.match(value)
    if not match or match[2] not in INSTANCE_SIZES:
        return False
    return INSTANCE_SIZES.index(match[2]) >= INSTANCE_SIZES.index(MINIMUM_INSTANCE_SIZE)


def _parse_cluster(reader: _Reader, index: int, raw: Any) -> ClusterSettings | None:
    path = f"clusters[{index}]"
    if not isinstance(raw, Mapping):
        reader.fail(path, raw, "an object with name, zone, network, cni, serviceLevel, nodepool")
        return None
    reader.unknown_keys(raw, CLUSTER_KEYS, f"{path}.")
    name = reader.string(
        raw,
        "name",
        f"{path}.name",
        None,
        DNS_LABEL.match,
        "a DNS label: lowercase letters, digits and '-', 1-40 characters",
    )
    if "name" not in raw:
        reader.problems.append(f"{PROJECT}:{path}.name: missing; every cluster needs a name")
    zone = reader.string(
        raw, "zone", f"{path}.zone", None, lambda z: z in EXOSCALE_ZONES, f"one of {', '.join(EXOSCALE_ZONES)}"
    )
    if "zone" not in raw:
        reader.problems.append(f"{PROJECT}:{path}.zone: missing; one of {', '.join(EXOSCALE_ZONES)}")
    network = reader.string(
        raw,
        "network",
        f"{path}.network",
        f"network-{name}" if name else None,
        DNS_LABEL.match,
        "a DNS label naming the cluster's Istio network",
    )
    version = reader.string(
        raw,
        "kubernetesVersion",
        f"{path}.kubernetesVersion",
        None,
        VERSION.match,
        "a full SKS version such as 1.34.3 (or unset for the latest)",
    )
    cni = reader.string(raw, "cni", f"{path}.cni", "calico", lambda c: c in CNIS, f"one of {', '.join(CNIS)}")
    service_level = reader.string(
        raw,
        "serviceLevel",
        f"{path}.serviceLevel",
        "pro",
        lambda s: s in SERVICE_LEVELS,
        f"one of {', '.join(SERVICE_LEVELS)}",
    )
    nodepool_raw = raw.get("nodepool", {})
    nodepool = NodepoolSettings()
    if not isinstance(nodepool_raw, Mapping):
        reader.fail(f"{path}.nodepool", nodepool_raw, "an object with instanceType, size, diskSize")
    else:
        reader.unknown_keys(nodepool_raw, NODEPOOL_KEYS, f"{path}.nodepool.")
        nodepool = NodepoolSettings(
            instance_type=reader.string(
                nodepool_raw,
                "instanceType",
                f"{path}.nodepool.instanceType",
                nodepool.instance_type,
                _instance_type_ok,
                f"<family>.<size> with size {MINIMUM_INSTANCE_SIZE} or larger "
                f"({', '.join(INSTANCE_SIZES[INSTANCE_SIZES.index(MINIMUM_INSTANCE_SIZE) :])})",
            )
            or nodepool.instance_type,
            # Every node joins the cluster's anti-affinity group, which holds at most 8 instances.
            size=reader.integer(nodepool_raw, "size", f"{path}.nodepool.size", nodepool.size, 1, MAX_NODEPOOL_SIZE),
            disk_size_gib=reader.integer(
                nodepool_raw, "diskSize", f"{path}.nodepool.diskSize", nodepool.disk_size_gib, 20, 51200
            ),
        )
    if name is None or zone is None or network is None:
        return None
    return ClusterSettings(
        name=name,
        zone=zone,
        network=network,
        kubernetes_version=version,
        cni=cni or "calico",
        service_level=service_level or "pro",
        nodepool=nodepool,
    )


def _parse_clusters(reader: _Reader, raw: Mapping[str, Any]) -> tuple[ClusterSettings, ...]:
    clusters_raw = reader.decode(raw["clusters"]) if "clusters" in raw else list(DEFAULT_CLUSTERS)
    if not isinstance(clusters_raw, list) or not clusters_raw:
        reader.fail("clusters", clusters_raw, "a non-empty list of cluster objects")
        return ()
    parsed = [_parse_cluster(reader, i, c) for i, c in enumerate(clusters_raw)]
    clusters = tuple(c for c in parsed if c is not None)
    for attribute, what in (("name", "cluster name"), ("network", "Istio network")):
        seen: dict[str, int] = {}
        for index, cluster in enumerate(clusters):
            value = getattr(cluster, attribute)
            if value in seen:
                reader.problems.append(
                    f"{PROJECT}:clusters[{index}].{attribute}: {json.dumps(value)} is already used by "
                    f"clusters[{seen[value]}]; each cluster needs its own {what}"
                    + (" (every SKS cluster has a separate pod network)" if attribute == "network" else "")
                )
            seen.setdefault(value, index)
    return clusters


def _parse_pki(reader: _Reader, raw: Mapping[str, Any], secret_keys: frozenset[str]) -> PkiSettings:
    defaults = PkiSettings()
    root_validity = reader.integer(raw, "rootCaValidityHours", "rootCaValidityHours", defaults.root_validity_hours, 24)
    intermediate_validity = reader.integer(
        raw, "intermediateCaValidityHours", "intermediateCaValidityHours", defaults.intermediate_validity_hours, 24
    )
    early_renewal = reader.integer(
        raw,
        "intermediateCaEarlyRenewalHours",
        "intermediateCaEarlyRenewalHours",
        defaults.intermediate_early_renewal_hours,
        0,
    )
    if intermediate_validity >= root_validity:
        reader.fail(
            "intermediateCaValidityHours",
            intermediate_validity,
            f"fewer hours than rootCaValidityHours ({root_validity}): an intermediate cannot outlive its root",
        )
    if early_renewal >= intermediate_validity:
        reader.fail(
            "intermediateCaEarlyRenewalHours",
            early_renewal,
            f"fewer hours than intermediateCaValidityHours ({intermediate_validity})",
        )
    root_cert = reader.string(
        raw,
        "rootCaCertPem",
        "rootCaCertPem",
        None,
        lambda pem: "-----BEGIN CERTIFICATE-----" in pem,
        "a PEM certificate",
    )
    has_key = raw.get("rootCaKeyPem") not in (None, "")
    if (root_cert is None) != (not has_key):
        reader.problems.append(
            f"{PROJECT}:rootCaCertPem/rootCaKeyPem: bring-your-own root needs both the certificate "
            "and its key (or neither, to generate a root)"
        )
    if has_key:
        if "rootCaKeyPem" not in secret_keys:
            reader.fail(
                "rootCaKeyPem",
                raw["rootCaKeyPem"],
                "a secret: set it with `pulumi config set --secret rootCaKeyPem`",
                secret=True,
            )
        elif "PRIVATE KEY-----" not in str(raw["rootCaKeyPem"]):
            reader.fail("rootCaKeyPem", None, "a PEM private key", secret=True)
    return PkiSettings(
        organization=reader.string(raw, "caOrganization", "caOrganization", defaults.organization)
        or defaults.organization,
        key_algorithm=reader.string(
            raw,
            "caKeyAlgorithm",
            "caKeyAlgorithm",
            defaults.key_algorithm,
            lambda a: a in KEY_ALGORITHMS,
            f"one of {', '.join(KEY_ALGORITHMS)}",
        )
        or defaults.key_algorithm,
        root_validity_hours=root_validity,
        intermediate_validity_hours=intermediate_validity,
        intermediate_early_renewal_hours=early_renewal,
        root_generation=reader.integer(raw, "rootCaGeneration", "rootCaGeneration", defaults.root_generation, 1),
        root_cert_pem=root_cert if has_key else None,
    )


def _parse_demo(reader: _Reader, raw: Mapping[str, Any], clusters: tuple[ClusterSettings, ...]) -> DemoSettings:
    names = list(dict.fromkeys(c.name for c in clusters))  # duplicates are reported elsewhere
    default_server = names[1] if len(names) > 1 else (names[0] if names else "")
    default_client = names[0] if names else ""
    allowed = f"one of the configured clusters ({', '.join(names)})"
    server = (
        reader.string(raw, "demoServerCluster", "demoServerCluster", default_server, lambda n: n in names, allowed)
        or default_server
    )
    client = (
        reader.string(raw, "demoClientCluster", "demoClientCluster", default_client, lambda n: n in names, allowed)
        or default_client
    )
    if len(names) > 1 and server == client:
        reader.fail(
            "demoClientCluster",
            client,
            f"a cluster other than demoServerCluster ({server}), so the demo crosses clusters",
        )
    return DemoSettings(
        ingress_weights=_parse_ingress_weights(reader, raw, names, client),
        enabled=reader.boolean(raw, "demoEnabled", "demoEnabled", True),
        server_cluster=server,
        client_cluster=client,
        smoke_test=reader.boolean(raw, "smokeTest", "smokeTest", True),
        curl_image=reader.string(
            raw,
            "curlImage",
            "curlImage",
            DemoSettings.curl_image,
            lambda i: ":" in i or "@" in i,
            "an image with a pinned tag or digest",
        )
        or DemoSettings.curl_image,
    )


def _parse_ingress_weights(
    reader: _Reader, raw: Mapping[str, Any], names: list[str], client: str
) -> tuple[tuple[str, int], ...]:
    if raw.get("demoIngressWeights") in (None, "", {}):
        return ()
    weights = reader.decode(raw["demoIngressWeights"])
    allowed = (
        f"an object mapping clusters other than the client ({', '.join(n for n in names if n != client)}) "
        "to integer percentages that add up to 100"
    )
    if (
        not isinstance(weights, Mapping)
        or not all(name in names and name != client for name in weights)
        or not all(isinstance(w, int) and not isinstance(w, bool) and 0 <= w <= 100 for w in weights.values())
        or sum(weights.values()) != 100
    ):
        # exo-webtest in the client cluster would answer the smoke test locally, proving nothing.
        reader.fail("demoIngressWeights", weights, allowed)
        return ()
    return tuple(sorted(weights.items()))


def parse_config(raw: Mapping[str, Any], secret_keys: frozenset[str] = frozenset()) -> MeshSettings:
    """Turn the stack's config (keys without the project prefix) into validated settings.

    Raises ConfigError listing every problem; values of secret keys are never echoed.
    """
    reader = _Reader()
    reader.unknown_keys(raw, TOP_LEVEL_KEYS, "")
    clusters = _parse_clusters(reader, raw)
    defaults = MeshSettings(clusters=())

    istio_version = (
        reader.string(
            raw,
            "istioVersion",
            "istioVersion",
            defaults.istio_version,
            lambda v: bool(VERSION.match(v)) and _version_tuple(v) >= MINIMUM_ISTIO_VERSION,
            "an Istio release X.Y.Z, 1.26.0 or newer",
        )
        or defaults.istio_version
    )
    ttl = reader.integer(raw, "kubeconfigTtlSeconds", "kubeconfigTtlSeconds", defaults.kubeconfig_ttl_seconds, 3600)
    early = reader.integer(
        raw,
        "kubeconfigEarlyRenewalSeconds",
        "kubeconfigEarlyRenewalSeconds",
        defaults.kubeconfig_early_renewal_seconds,
        0,
    )
    if early >= ttl:
        reader.fail("kubeconfigEarlyRenewalSeconds", early, f"fewer seconds than kubeconfigTtlSeconds ({ttl})")

    settings = MeshSettings(
        clusters=clusters,
        mesh_id=reader.string(raw, "meshId", "meshId", defaults.mesh_id, DNS_LABEL.match, "a DNS label")
        or defaults.mesh_id,
        istio_version=istio_version,
        istio_chart_repository=reader.string(
            raw,
            "istioChartRepository",
            "istioChartRepository",
            defaults.istio_chart_repository,
            CHART_REPOSITORY_URL.match,
            "an http:// or https:// URL of a Helm chart repository",
        )
        or defaults.istio_chart_repository,
        mtls_strict=reader.boolean(raw, "mtlsStrict", "mtlsStrict", defaults.mtls_strict),
        protect=reader.boolean(raw, "protect", "protect", defaults.protect),
        kubeconfig_ttl_seconds=ttl,
        kubeconfig_early_renewal_seconds=early,
        pki=_parse_pki(reader, raw, secret_keys),
        demo=_parse_demo(reader, raw, clusters),
        helm=HelmSettings(
            timeout_seconds=reader.integer(
                raw, "helmTimeoutSeconds", "helmTimeoutSeconds", HelmSettings.timeout_seconds, 60, 3600
            )
        ),
    )
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings
