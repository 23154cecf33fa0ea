"""Stack configuration, declared once as pydantic models: types, defaults, limits, and as each field's description
the allowed text of error messages, the JSON Schema and the README table (`make schema`). Free of Pulumi."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, StrictInt, ValidationInfo, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from mesh_constants import PROJECT

# Zones that offer SKS (egoscale v3 zone list; reference/exoscale-sks-and-pulumi.md §8).
EXOSCALE_ZONES = ("ch-gva-2", "ch-dk-2", "de-fra-1", "de-muc-1", "at-vie-1", "at-vie-2", "bg-sof-1", "hr-zag-1")
# Istio's control plane and sidecars need at least a medium node (the Exoscale tutorial's minimum).
MEDIUM_OR_LARGER = ("medium", "large", "extra-large", "huge", "mega", "titan", "jumbo", "colossus")
# Istio's official Helm repository; air-gapped users point istioChartRepository at a mirror.
ISTIO_CHART_REPOSITORY = "https://istio-release.storage.googleapis.com/charts"
# The gateway chart labels its pods with the network only since Istio 1.26 (istio/istio#54909);
# older charts need the label by hand (reference/istio-multicluster.md §4, §10).
MINIMUM_ISTIO_VERSION = (1, 26, 0)
DNS_LABEL = r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$"
DNS_LABEL_TEXT = "a DNS label: lowercase letters, digits and '-', starting with a letter, 1-40 characters"
# Namespaces a stack file's keys may use besides the project's: the providers' and Pulumi's own.
OTHER_NAMESPACES = ("exoscale", "kubernetes", "tls", "pulumi")


def _istio_release(version: str) -> str:
    if not re.fullmatch(r"\d+\.\d+\.\d+", version) or tuple(map(int, version.split("."))) < MINIMUM_ISTIO_VERSION:
        raise ValueError("not an Istio release 1.26.0 or newer")
    return version


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class NodepoolSettings(_Model):
    instance_type: str = Field(
        "standard.medium", pattern=rf"^[a-z][a-z0-9]*\.({'|'.join(MEDIUM_OR_LARGER)})$",
        description=f"<family>.<size> with size medium or larger ({', '.join(MEDIUM_OR_LARGER)}), e.g. standard.large")
    size: int = Field(2, ge=1, le=8, description="an integer >= 1 and <= 8 (an anti-affinity group holds 8 instances)")
    disk_size_gib: int = Field(50, ge=20, le=51200, alias="diskSize", description="an integer >= 20 and <= 51200 (GiB)")


class ClusterSettings(_Model):
    name: str = Field(pattern=DNS_LABEL, description=f"{DNS_LABEL_TEXT}; unique")
    zone: Literal[EXOSCALE_ZONES] = Field(description=f"one of {', '.join(EXOSCALE_ZONES)}")  # type: ignore[valid-type]
    network: str | None = Field(None, pattern=DNS_LABEL,
                                description=f"{DNS_LABEL_TEXT}; one per cluster (its Istio network)")
    kubernetes_version: str | None = Field(None, pattern=r"^\d+\.\d+\.\d+$", description=(
        "unset (the newest at creation), or a full SKS version X.Y.Z, which a replacement cannot use once SKS "
        "drops it"))
    cni: Literal["calico", "cilium"] = Field("calico", description="one of calico, cilium")
    service_level: Literal["pro", "starter"] = Field("pro", description="one of pro, starter")
    nodepool: NodepoolSettings = Field(NodepoolSettings(), description="an object with instanceType, size, diskSize")


@dataclass(frozen=True)
class PkiSettings:
    organization: str
    key_algorithm: str
    root_validity_hours: int
    intermediate_validity_hours: int
    intermediate_early_renewal_hours: int
    root_generation: int  # the root changes only with it: istiod needs a restart to trust a new root
    # Bring-your-own root: the certificate is public; its key, a Pulumi secret, never passes through here.
    root_cert_pem: str | None

    @property
    def bring_your_own_root(self) -> bool:
        return self.root_cert_pem is not None


# With 2 or more: a PodDisruptionBudget that lets a drain evict one at a time, spread across nodes.
Replicas = Annotated[int, Field(ge=1, description="an integer >= 1 (2 or more for a node drain without downtime)")]


class MeshSettings(_Model):
    # Required: clusters cost money, so none are created that the stack does not list.
    clusters: tuple[ClusterSettings, ...] = Field(min_length=1, description="a non-empty list of cluster objects")
    mesh_id: str = Field("mesh1", pattern=DNS_LABEL, description=DNS_LABEL_TEXT)
    istio_version: Annotated[str, AfterValidator(_istio_release)] = Field(
        "1.30.3", description="an Istio release X.Y.Z, 1.26.0 or newer")
    istio_chart_repository: str = Field(ISTIO_CHART_REPOSITORY, pattern=r"^https?://[^\s/]+(/\S*)?$", description=(
        "an http:// or https:// URL of a Helm repository serving the charts"))
    mtls_strict: bool = Field(True, description="true or false")
    istiod_replicas: Replicas = 1
    eastwest_gateway_replicas: Replicas = 1
    protect: bool = Field(False, description="true or false")
    kubeconfig_ttl_seconds: int = Field(
        30 * 24 * 3600, ge=3600, description="an integer >= 3600 (s), more than kubeconfigEarlyRenewalSeconds")
    kubeconfig_early_renewal_seconds: int = Field(7 * 24 * 3600, ge=0, description="an integer >= 0 (s)")
    helm_timeout_seconds: int = Field(900, ge=60, le=3600, description="an integer >= 60 and <= 3600 (s)")
    ca_organization: str = Field("sks-istio-mesh", min_length=1, description="a non-empty string")
    ca_key_algorithm: Literal["RSA", "ECDSA"] = Field("RSA", description="one of RSA (4096 bits), ECDSA (P-256)")
    root_ca_validity_hours: int = Field(87600, ge=24, description="an integer >= 24 (h), more than the intermediates'")
    intermediate_ca_validity_hours: int = Field(
        17520, ge=24, description="an integer >= 24 (h), more than intermediateCaEarlyRenewalHours")
    intermediate_ca_early_renewal_hours: int = Field(720, ge=0, description="an integer >= 0 (h)")
    root_ca_generation: int = Field(
        1, ge=1, description="an integer >= 1; raise it by one to rotate the root (README: Certificates)")
    root_ca_cert_pem: str | None = Field(None, pattern="-----BEGIN CERTIFICATE-----",
                                         description="a PEM certificate, set together with rootCaKeyPem")
    root_ca_key_pem: SecretStr | None = Field(None, description="a PEM private key, set with --secret")
    # Opt-in: the demo's app and smoke test are for trying the mesh out, not for production.
    demo_enabled: bool = Field(False, description="true or false (the exodemo app, its smoke test and ingress)")
    demo_server_cluster: str | None = Field(None, description="a configured cluster")
    demo_client_cluster: str | None = Field(None, description="a configured cluster other than demoServerCluster")
    smoke_test: bool = Field(True, description="true or false")
    demo_ingress_weights: dict[str, StrictInt] = Field({}, description=(
        "an object mapping clusters other than the client to integer percentages that add up to 100"))
    curl_image: str = Field("curlimages/curl:8.17.0", pattern=r"[:@]",
                            description="an image with a pinned tag or digest")

    def cluster(self, name: str) -> ClusterSettings:
        return next(cluster for cluster in self.clusters if cluster.name == name)

    @property
    def pki(self) -> PkiSettings:
        return PkiSettings(self.ca_organization, self.ca_key_algorithm, self.root_ca_validity_hours,
                           self.intermediate_ca_validity_hours, self.intermediate_ca_early_renewal_hours,
                           self.root_ca_generation, self.root_ca_cert_pem if self.root_ca_key_pem else None)

    @model_validator(mode="after")
    def _defaults_and_rules_across_keys(self, info: ValidationInfo) -> MeshSettings:
        """Pydantic runs this only once every key is valid on its own, so a bad value is never reported
        again through the keys that depend on it. Defaults: one network per cluster, the demo across two."""
        names, values = [c.name for c in self.clusters], self.model_dump(by_alias=True)
        server = self.demo_server_cluster or names[min(1, len(names) - 1)]
        client = self.demo_client_cluster or names[0]
        key_pem = self.root_ca_key_pem.get_secret_value() if self.root_ca_key_pem else None
        problems: dict[str, str] = {}  # key: what is allowed
        for low, high, unit, why in (("kubeconfigEarlyRenewalSeconds", "kubeconfigTtlSeconds", "seconds", ""),
                                     ("intermediateCaValidityHours", "rootCaValidityHours", "hours",
                                      ": an intermediate cannot outlive its root"),
                                     ("intermediateCaEarlyRenewalHours", "intermediateCaValidityHours", "hours", "")):
            if values[low] >= values[high]:
                problems[low] = f"fewer {unit} than {high} ({values[high]}){why}"
        if (self.root_ca_cert_pem is None) != (key_pem is None):
            problems["rootCaCertPem" if key_pem is None else "rootCaKeyPem"] = \
                "rootCaCertPem and rootCaKeyPem both (bring your own root), or neither (generate one)"
        elif key_pem is not None and "rootCaKeyPem" not in (info.context or {}).get("secret_keys", ()):
            problems["rootCaKeyPem"] = "a secret: set it with `pulumi config set --secret rootCaKeyPem`"
        elif key_pem is not None and "PRIVATE KEY-----" not in key_pem:
            problems["rootCaKeyPem"] = "a PEM private key"
        for key, name in (("demoServerCluster", server), ("demoClientCluster", client)):
            if name not in names:
                problems[key] = f"one of the configured clusters ({', '.join(names)})"
        if server == client and client in names and len(set(names)) > 1:
            problems["demoClientCluster"] = (f"a cluster other than demoServerCluster ({server}), so the demo "
                                             "crosses clusters")
        # exo-webtest in the client cluster would answer the smoke test locally, proving nothing.
        targets, weights = [n for n in names if n != client], self.demo_ingress_weights
        if weights and (set(weights) - set(targets) or min(weights.values()) < 0 or sum(weights.values()) != 100):
            problems["demoIngressWeights"] = (f"an object mapping clusters other than the client ({', '.join(targets)})"
                                              " to integer percentages that add up to 100")
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, [
                InitErrorDetails(type=PydanticCustomError("not_allowed", "{allowed}", {"allowed": allowed}),
                                 loc=(key,), input=None) for key, allowed in problems.items()])
        clusters = [c if c.network else c.model_copy(update={"network": f"network-{c.name}"}) for c in self.clusters]
        return self.model_copy(update={"clusters": tuple(clusters), "demo_server_cluster": server,
                                       "demo_client_cluster": client})


class ConfigError(ValueError):
    """Every problem found in the stack config, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def _decoded(value: Any) -> Any:
    """Pulumi hands structured config to the program as JSON text."""
    with contextlib.suppress(ValueError):
        return json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value
    return value


def _duplicates(clusters: Any) -> list[str]:
    """Clusters sharing a name or network, blamed on the later entry, read from the raw list so that a bad
    entry neither hides nor shifts them. (A defaulted network repeats only with its name, reported already.)"""
    problems: list[str] = []
    first: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(clusters if isinstance(clusters, list) else []):
        for key, what in (("name", "cluster name"), ("network", "Istio network (each SKS cluster is one)")):
            value = entry.get(key) if isinstance(entry, Mapping) else None
            if isinstance(value, str) and first.setdefault((key, value), index) != index:
                problems.append(f"{PROJECT}:clusters[{index}].{key}: {json.dumps(value)} is already used by "
                                f"clusters[{first[key, value]}]; each cluster needs its own {what}")
    return problems


NESTED_MODELS: dict[str, type[BaseModel]] = {"clusters": ClusterSettings, "nodepool": NodepoolSettings}


def _locate(loc: tuple[Any, ...], data: Any) -> tuple[str, Any, type[BaseModel], Any]:
    """For an error's loc: the key as a stack file spells it (`clusters[0].nodepool.size`), its value, model and
    field (None if unknown). A problem inside a map-valued key (demoIngressWeights) is one of the key."""
    key, model, field = "", MeshSettings, None
    for part in loc:
        data = data.get(part) if isinstance(data, Mapping) else data[part] if isinstance(data, list) else None
        key += f"[{part}]" if isinstance(part, int) else f".{part}"
        if isinstance(part, str):
            model = NESTED_MODELS[field.alias] if field else model
            field = next((f for f in model.model_fields.values() if f.alias == part), None)
            if field is None or get_origin(field.annotation) is dict:
                break
    return key.lstrip("."), data, model, field


def _foreign(other_keys: frozenset[str]) -> list[str]:
    """Keys of another namespace than the project's, a provider's or Pulumi's: most likely a
    misspelt project name, whose keys the program would otherwise never see."""
    allowed = f"{PROJECT}, {', '.join(OTHER_NAMESPACES[:-1])} or {OTHER_NAMESPACES[-1]}"
    return [f"{key}: unknown namespace {key.split(':')[0]}; stack config keys belong to {allowed} "
            f"(did you mean {PROJECT}:{key.split(':', 1)[-1]}?)"
            for key in sorted(other_keys) if key.split(":")[0] not in (PROJECT, *OTHER_NAMESPACES)]


def parse_config(
    raw: Mapping[str, Any], secret_keys: frozenset[str] = frozenset(), other_keys: frozenset[str] = frozenset()
) -> MeshSettings:
    """The stack's config (keys without the project prefix; `other_keys`: the stack's other keys, with their
    namespace) as settings, or a ConfigError listing every problem, one line each, never echoing a secret."""
    data = {key: _decoded(value) for key, value in raw.items()}
    problems = _foreign(other_keys)
    # A key set in a misspelt namespace is reported there, not again as missing here.
    reported = {p.split(":", 2)[1] for p in problems}
    settings = None
    try:
        settings = MeshSettings.model_validate(data, context={"secret_keys": secret_keys})
    except ValidationError as error:
        for detail in (errors := error.errors()):
            loc, (key, value, model, field) = detail["loc"], _locate(detail["loc"], data)
            # A list is "too short" when its entries are invalid: only the entries are the problem.
            if key in reported or any(len(o["loc"]) > len(loc) and o["loc"][:len(loc)] == loc for o in errors):
                continue
            reported.add(key)
            if field is None:
                keys = ", ".join(str(f.alias) for f in model.model_fields.values())
                problems.append(f"{PROJECT}:{key}: unknown key; allowed keys are {keys}")
                continue
            secret = key in secret_keys or SecretStr in get_args(field.annotation)
            shown = "(secret value)" if secret else json.dumps(value)
            verdict = "missing" if detail["type"] == "missing" else f"{shown} is not allowed"
            allowed = (detail.get("ctx") or {}).get("allowed") or field.description
            problems.append(f"{PROJECT}:{key}: {verdict}; expected {allowed}")
    problems += _duplicates(data.get("clusters"))
    if problems or settings is None:
        raise ConfigError(problems)
    return settings
