"""Stack configuration, declared once as pydantic models: types, defaults, limits and the text
every error message, the JSON Schema (schema/) and the README's config table show as allowed.

Nothing here touches Pulumi, so every rule is testable without a runtime, and a bad stack fails
before a single resource is registered. To add a key: add a field to MeshSettings (or a cluster
model) with `setting(...)`, run `make schema`, and copy the row `make schema` prints into README.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictInt,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError

from mesh_constants import PROJECT

# Zones that offer SKS (egoscale v3 zone list; reference/exoscale-sks-and-pulumi.md §8).
EXOSCALE_ZONES = ("ch-gva-2", "ch-dk-2", "de-fra-1", "de-muc-1", "at-vie-1", "at-vie-2", "bg-sof-1", "hr-zag-1")
# Exoscale instance sizes, smallest first. Istio's control plane and sidecars need at least a
# medium node (the Exoscale tutorial's minimum).
INSTANCE_SIZES = ("micro", "tiny", "small", "medium", "large", "extra-large", "huge", "mega", "titan", "jumbo",
                  "colossus")
MINIMUM_INSTANCE_SIZE = "medium"
# Istio's official Helm repository; air-gapped users point istioChartRepository at a mirror.
ISTIO_CHART_REPOSITORY = "https://istio-release.storage.googleapis.com/charts"
# The gateway chart labels its pods with the network only since Istio 1.26 (istio/istio#54909);
# older charts need the label by hand (reference/istio-multicluster.md §4, §10).
MINIMUM_ISTIO_VERSION = (1, 26, 0)
DNS_LABEL = r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$"
DNS_LABEL_TEXT = "a DNS label: lowercase letters, digits and '-', starting with a letter, 1-40 characters"
BIGGER_SIZES = INSTANCE_SIZES[INSTANCE_SIZES.index(MINIMUM_INSTANCE_SIZE):]

# Namespaces a stack file's keys may use besides the project's: the providers' and Pulumi's own.
OTHER_NAMESPACES = ("exoscale", "kubernetes", "tls", "pulumi")


def setting(
    default: Any = ..., *, allowed: str, shown_default: str | None = None, secret: bool = False, **constraints: Any
) -> Any:
    """A field with the text messages, schema and README show as allowed (and, where the default
    is computed, how the README shows it)."""
    extra = {"allowed": allowed, "secret": secret} | ({"shownDefault": shown_default} if shown_default else {})
    return Field(default, description=allowed, json_schema_extra=extra, **constraints)


def _instance_type(value: str) -> str:
    family_size = re.fullmatch(r"[a-z][a-z0-9]*\.([a-z-]+)", value)
    if not family_size or family_size[1] not in BIGGER_SIZES:
        raise ValueError("not an instance type of size medium or larger")
    return value


def _istio_release(value: str) -> str:
    if not re.fullmatch(r"\d+\.\d+\.\d+", value) or tuple(map(int, value.split("."))) < MINIMUM_ISTIO_VERSION:
        raise ValueError("not an Istio release 1.26.0 or newer")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class NodepoolSettings(_Model):
    instance_type: Annotated[str, AfterValidator(_instance_type)] = setting(
        "standard.medium", allowed=f"<family>.<size> with size {MINIMUM_INSTANCE_SIZE} or larger "
                                   f"({', '.join(BIGGER_SIZES)}), e.g. standard.large")
    # Every node joins the cluster's anti-affinity group, which holds at most 8 instances.
    size: int = setting(2, ge=1, le=8, allowed="an integer >= 1 and <= 8 (an anti-affinity group holds 8 instances)")
    disk_size_gib: int = setting(50, ge=20, le=51200, alias="diskSize", allowed="an integer >= 20 and <= 51200 (GiB)")


class ClusterSettings(_Model):
    name: str = setting(pattern=DNS_LABEL, allowed=f"{DNS_LABEL_TEXT}; unique", shown_default="(required)")
    zone: Literal[EXOSCALE_ZONES] = setting(allowed=f"one of {', '.join(EXOSCALE_ZONES)}",  # type: ignore[valid-type]
                                            shown_default="(required)")
    network: str | None = setting(None, pattern=DNS_LABEL, shown_default="network-<name>",
                                  allowed=f"{DNS_LABEL_TEXT}; one per cluster (its Istio network)")
    kubernetes_version: str | None = setting(
        None, pattern=r"^\d+\.\d+\.\d+$", shown_default="newest SKS version",
        allowed="unset (the newest at creation), or a full SKS version X.Y.Z, which a replacement cannot use once "
                "SKS drops it")
    cni: Literal["calico", "cilium"] = setting("calico", allowed="one of calico, cilium")
    service_level: Literal["pro", "starter"] = setting("pro", allowed="one of pro, starter")
    nodepool: NodepoolSettings = setting(NodepoolSettings(), allowed="an object with instanceType, size, diskSize")

    @model_validator(mode="after")
    def _network_defaults_to_one_per_cluster(self) -> ClusterSettings:
        return self if self.network else self.model_copy(update={"network": f"network-{self.name}"})


@dataclass(frozen=True)
class PkiSettings:
    """What the mesh CA component reads (components/pki.py)."""

    organization: str
    key_algorithm: str
    root_validity_hours: int
    intermediate_validity_hours: int
    intermediate_early_renewal_hours: int
    # The root only changes when this does: istiod needs a restart to trust a new root.
    root_generation: int
    # Bring-your-own root: the certificate is public; its key is read as a Pulumi secret by
    # __main__.py and never passes through these settings.
    root_cert_pem: str | None

    @property
    def bring_your_own_root(self) -> bool:
        return self.root_cert_pem is not None


class MeshSettings(_Model):
    """Every `sks-istio-mesh:*` key of a stack, in the README's order."""

    # Required: clusters cost money, so none are created that the stack does not list.
    clusters: tuple[ClusterSettings, ...] = setting(min_length=1, allowed="a non-empty list of cluster objects")
    mesh_id: str = setting("mesh1", pattern=DNS_LABEL, allowed=DNS_LABEL_TEXT)
    istio_version: Annotated[str, AfterValidator(_istio_release)] = setting(
        "1.30.3", allowed="an Istio release X.Y.Z, 1.26.0 or newer")
    istio_chart_repository: str = setting(ISTIO_CHART_REPOSITORY, pattern=r"^https?://[^\s/]+(/\S*)?$",
                                          allowed="an http:// or https:// URL of a Helm repository serving the charts")
    mtls_strict: bool = setting(True, allowed="true or false")
    # With 2 or more: a PodDisruptionBudget that lets a drain evict one at a time, spread across nodes.
    istiod_replicas: int = setting(1, ge=1, allowed="an integer >= 1 (2 or more for a node drain without downtime)")
    eastwest_gateway_replicas: int = setting(
        1, ge=1, allowed="an integer >= 1 (2 or more for a node drain without downtime)")
    protect: bool = setting(False, allowed="true or false")
    kubeconfig_ttl_seconds: int = setting(30 * 24 * 3600, ge=3600,
                                          allowed="an integer >= 3600 (s), more than kubeconfigEarlyRenewalSeconds")
    kubeconfig_early_renewal_seconds: int = setting(7 * 24 * 3600, ge=0, allowed="an integer >= 0 (s)")
    helm_timeout_seconds: int = setting(900, ge=60, le=3600, allowed="an integer >= 60 and <= 3600 (s)")
    ca_organization: str = setting("sks-istio-mesh", min_length=1, allowed="a non-empty string")
    ca_key_algorithm: Literal["RSA", "ECDSA"] = setting("RSA", allowed="one of RSA (4096 bits), ECDSA (P-256)")
    root_ca_validity_hours: int = setting(87600, ge=24, allowed="an integer >= 24 (h), more than the intermediates'")
    intermediate_ca_validity_hours: int = setting(
        17520, ge=24, allowed="an integer >= 24 (h), more than intermediateCaEarlyRenewalHours")
    intermediate_ca_early_renewal_hours: int = setting(720, ge=0, allowed="an integer >= 0 (h)")
    root_ca_generation: int = setting(
        1, ge=1, allowed="an integer >= 1; raise it by one to rotate the root (README: Certificates)")
    root_ca_cert_pem: str | None = setting(None, pattern="-----BEGIN CERTIFICATE-----", shown_default="(generated)",
                                           allowed="a PEM certificate, set together with rootCaKeyPem")
    root_ca_key_pem: SecretStr | None = setting(None, shown_default="(generated)", secret=True,
                                                allowed="a PEM private key, set with --secret")
    # Opt-in: the demo's app and smoke test are for trying the mesh out, not for production.
    demo_enabled: bool = setting(False, allowed="true or false (the exodemo app, its smoke test and ingress)")
    demo_server_cluster: str | None = setting(None, shown_default="second cluster", allowed="a configured cluster")
    demo_client_cluster: str | None = setting(None, shown_default="first cluster",
                                              allowed="a configured cluster other than demoServerCluster")
    smoke_test: bool = setting(True, allowed="true or false")
    demo_ingress_weights: dict[str, StrictInt] = setting(
        {}, shown_default="{} (no ingress)",
        allowed="an object mapping clusters other than the client to integer percentages that add up to 100")
    curl_image: str = setting("curlimages/curl:8.17.0", pattern=r"[:@]", allowed="an image with a pinned tag or digest")

    def cluster(self, name: str) -> ClusterSettings:
        return next(cluster for cluster in self.clusters if cluster.name == name)

    @property
    def pki(self) -> PkiSettings:
        return PkiSettings(self.ca_organization, self.ca_key_algorithm, self.root_ca_validity_hours,
                           self.intermediate_ca_validity_hours, self.intermediate_ca_early_renewal_hours,
                           self.root_ca_generation, self.root_ca_cert_pem if self.root_ca_key_pem else None)

    @model_validator(mode="after")
    def _demo_defaults_to_the_second_and_first_cluster(self) -> MeshSettings:
        names = [c.name for c in self.clusters]
        return self.model_copy(update={"demo_server_cluster": self.demo_server_cluster or names[min(1, len(names) - 1)],
                                       "demo_client_cluster": self.demo_client_cluster or names[0]})

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> MeshSettings:
        """Rules across keys; pydantic runs them only once every key is valid on its own, so a bad
        value is never reported again through the keys that depend on it."""
        problems: list[tuple[str, str]] = []
        if self.kubeconfig_early_renewal_seconds >= self.kubeconfig_ttl_seconds:
            problems.append(("kubeconfigEarlyRenewalSeconds",
                             f"fewer seconds than kubeconfigTtlSeconds ({self.kubeconfig_ttl_seconds})"))
        if self.intermediate_ca_validity_hours >= self.root_ca_validity_hours:
            problems.append(("intermediateCaValidityHours", f"fewer hours than rootCaValidityHours "
                             f"({self.root_ca_validity_hours}): an intermediate cannot outlive its root"))
        if self.intermediate_ca_early_renewal_hours >= self.intermediate_ca_validity_hours:
            problems.append(("intermediateCaEarlyRenewalHours",
                             f"fewer hours than intermediateCaValidityHours ({self.intermediate_ca_validity_hours})"))
        if (self.root_ca_cert_pem is None) != (self.root_ca_key_pem is None):
            problems.append(("rootCaCertPem" if self.root_ca_cert_pem else "rootCaKeyPem",
                             "rootCaCertPem and rootCaKeyPem both (bring your own root), or neither (generate one)"))
        if self.root_ca_key_pem is not None:
            if "rootCaKeyPem" not in (info.context or {}).get("secret_keys", ()):
                problems.append(("rootCaKeyPem", "a secret: set it with `pulumi config set --secret rootCaKeyPem`"))
            elif "PRIVATE KEY-----" not in self.root_ca_key_pem.get_secret_value():
                problems.append(("rootCaKeyPem", "a PEM private key"))
        problems += self._demo_problems()
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, [
                InitErrorDetails(type=PydanticCustomError("not_allowed", "{allowed}", {"allowed": allowed}),
                                 loc=(key,), input=None)
                for key, allowed in problems
            ])
        return self

    def _demo_problems(self) -> list[tuple[str, str]]:
        names, server, client = [c.name for c in self.clusters], self.demo_server_cluster, self.demo_client_cluster
        problems = [(key, f"one of the configured clusters ({', '.join(names)})")
                    for key, value in (("demoServerCluster", server), ("demoClientCluster", client))
                    if value not in names]
        if not problems and len(set(names)) > 1 and server == client:
            problems.append(("demoClientCluster", f"a cluster other than demoServerCluster ({server}), so the demo "
                             "crosses clusters"))
        weights = self.demo_ingress_weights
        # exo-webtest in the client cluster would answer the smoke test locally, proving nothing.
        if weights and (any(n not in names or n == client for n in weights)
                        or any(not 0 <= w <= 100 for w in weights.values()) or sum(weights.values()) != 100):
            targets = ", ".join(n for n in names if n != client)
            problems.append(("demoIngressWeights", "an object mapping clusters other than the client "
                             f"({targets}) to integer percentages that add up to 100"))
        return problems


class ConfigError(ValueError):
    """Every problem found in the stack config, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid stack configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def _decoded(value: Any) -> Any:
    # Pulumi hands structured config to the program as JSON text.
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def _duplicates(clusters: Any) -> list[str]:
    """Clusters sharing a name or network, blamed on the later entry and naming the first. Read from
    the raw list, so a bad entry elsewhere neither hides nor shifts them. (A defaulted network
    repeats only when the name does, which is reported already.)"""
    entries = [c for c in clusters if isinstance(c, Mapping)] if isinstance(clusters, list) else []
    problems = []
    for key, what in (("name", "cluster name"), ("network", "Istio network (each SKS cluster is one)")):
        first: dict[str, int] = {}
        for index, value in enumerate(entry.get(key) for entry in entries):
            if isinstance(value, str) and first.setdefault(value, index) != index:
                problems.append(f"{PROJECT}:clusters[{index}].{key}: {json.dumps(value)} is already used by "
                                f"clusters[{first[value]}]; each cluster needs its own {what}")
    return problems


NESTED_MODELS: dict[str, type[BaseModel]] = {"clusters": ClusterSettings, "nodepool": NodepoolSettings}


def _locate(loc: tuple[Any, ...], data: Any) -> tuple[str, Any, type[BaseModel], Any]:
    """For an error's loc: the key as the stack file spells it (`clusters[0].nodepool.size`), the
    value there, the model holding the key, and its field (None if unknown). Problems inside a
    map-valued key (demoIngressWeights) are reported on the key."""
    key, model, field = "", MeshSettings, None
    for part in loc:
        data = data.get(part) if isinstance(data, Mapping) else data[part] if isinstance(data, list) else None
        if isinstance(part, int):
            key += f"[{part}]"
            continue
        if field is not None:
            model = NESTED_MODELS[field.alias]
        key += f".{part}" if key else part
        field = next((f for f in model.model_fields.values() if f.alias == part), None)
        if field is None or get_origin(field.annotation) is dict:
            break
    return key, data, model, field


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
    """Turn the stack's config (keys without the project prefix; `other_keys`: every other key of
    the stack, with its namespace) into validated settings.

    Raises ConfigError listing every problem, one line each; values of secret keys are never echoed.
    """
    data = {key: _decoded(value) for key, value in raw.items()}
    problems = _foreign(other_keys)
    # A key set in a misspelt namespace is reported there, not again as missing here.
    reported = {p.split(":", 2)[1] for p in problems}
    settings = None
    try:
        settings = MeshSettings.model_validate(data, context={"secret_keys": secret_keys})
    except ValidationError as error:
        locs = [detail["loc"] for detail in error.errors()]
        for detail in error.errors():
            key, value, model, field = _locate(detail["loc"], data)
            # A list is "too short" when its entries are invalid: only the entries are the problem.
            if key in reported or any(len(o) > len(detail["loc"]) and o[:len(detail["loc"])] == detail["loc"]
                                      for o in locs):
                continue
            reported.add(key)
            if field is None:
                keys = ", ".join(str(f.alias) for f in model.model_fields.values())
                problems.append(f"{PROJECT}:{key}: unknown key; allowed keys are {keys}")
                continue
            allowed = (detail.get("ctx") or {}).get("allowed") or field.json_schema_extra["allowed"]
            secret = key in secret_keys or field.json_schema_extra["secret"]
            shown = "(secret value)" if secret else json.dumps(value)
            verdict = "missing" if detail["type"] == "missing" else f"{shown} is not allowed"
            problems.append(f"{PROJECT}:{key}: {verdict}; expected {allowed}")
    problems += _duplicates(data.get("clusters"))
    if problems or settings is None:
        raise ConfigError(problems)
    return settings
