"""The mesh's invariants, checked by `pulumi preview --policy-pack policy` (and `pulumi up`).

Each rule is a pure function over plain data (`Resource`: type, name, URN, camelCase properties,
provider name), so tests call it without the CLI. The `_validate_*` adapters at the bottom turn
pulumi-policy's arguments into that data and report what the rules return.

Unknown values: during a preview, outputs of resources not created yet (a root certificate, an NLB
id) reach the policy as pulumi-policy's unknown sentinels. `to_plain` turns them into `UNKNOWN`,
and every rule skips a check whose input is unknown instead of failing it: a rule fails only on
values that are known.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from pulumi_policy import (
    Policy,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Secret,
    StackValidationArgs,
    StackValidationPolicy,
    proxy,
)
from pulumi_policy.proxy import UnknownValueError

from mesh_constants import (
    CCM_ANNOTATION,
    EASTWEST_GATEWAY,
    HELM_RELEASE,
    INGRESS_GATEWAY,
    LOCALLY_SIGNED_CERT,
    SECRET,
    SELF_SIGNED_CERT,
    SERVICE,
    SKS_CLUSTER,
    SKS_NODEPOOL,
)

# The Istio charts the program installs (components/istio.py), by chart name.
ISTIO_CHARTS = ("base", "istiod", "gateway")
# The gateways allowed a load balancer: the east-west gateway, and the demo's optional ingress.
LOAD_BALANCED_GATEWAYS = (EASTWEST_GATEWAY, INGRESS_GATEWAY)
# Default providers are named `default` or `default_<version>` (e.g. `default_4_34_2`).
DEFAULT_PROVIDER_NAME = re.compile(r"^default(_|$)")
URN_STACK = re.compile(r"^urn:pulumi:([^:]+)::")
PROD_SERVICE_LEVEL = "pro"
MIN_PROD_NODES = 3
DEFAULT_PROD_STACKS = ("prod",)
CA_SIGNING_USE = "cert_signing"
# Istio's plug-in CA Secret and the files of it the rotation order is read from (README: Certificates).
CACERTS = "cacerts"
PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)

_UNKNOWN_SENTINELS = frozenset({
    proxy.UNKNOWN_ARCHIVE_VALUE,
    proxy.UNKNOWN_ARRAY_VALUE,
    proxy.UNKNOWN_ASSET_VALUE,
    proxy.UNKNOWN_BOOLEAN_VALUE,
    proxy.UNKNOWN_NUMBER_VALUE,
    proxy.UNKNOWN_OBJECT_VALUE,
    proxy.UNKNOWN_STRING_VALUE,
})


class _Unknown:
    """A value the engine cannot know yet (preview); see the module docstring."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()


@dataclass(frozen=True)
class Resource:
    """What the rules read of one resource, as plain data."""

    type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    # None when the engine sends no provider (component resources).
    provider_name: str | None = None

    def describe(self) -> str:
        return f'{self.type} "{self.name}"'


@dataclass(frozen=True)
class Violation:
    message: str
    urn: str


# Plain data ----------------------------------------------------------------------------------


def _item(container: Any, key: Any) -> Any:
    try:
        return container[key]
    except UnknownValueError:  # pulumi-policy's proxies raise on unknown values
        return UNKNOWN


def to_plain(value: Any) -> Any:
    """pulumi-policy properties (proxies, unknown sentinels, secrets) as dicts, lists and scalars,
    with `UNKNOWN` wherever the engine does not know the value yet."""
    if isinstance(value, Secret):
        return to_plain(value.value)
    if isinstance(value, str):
        return UNKNOWN if value in _UNKNOWN_SENTINELS else value
    if isinstance(value, Mapping):
        return {key: to_plain(_item(value, key)) for key in value}
    if isinstance(value, Sequence):
        return [to_plain(_item(value, index)) for index in range(len(value))]
    return value


def get_path(props: Any, *keys: str) -> Any:
    """props[k1][k2]...: None if a level is absent, UNKNOWN if a level is unknown."""
    value = props
    for key in keys:
        if value is UNKNOWN:
            return UNKNOWN
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def stack_of(urn: str) -> str | None:
    """The stack a URN belongs to: `urn:pulumi:<stack>::<project>::<type>::<name>`."""
    match = URN_STACK.match(urn)
    return match[1] if match else None


def is_prod_stack(stack: str | None, prod_stacks: Sequence[str] = DEFAULT_PROD_STACKS) -> bool:
    return stack is not None and any(fnmatchcase(stack, pattern) for pattern in prod_stacks)


def chart_name(props: Mapping[str, Any]) -> Any:
    """The chart's own name, whether given as `istiod`, `istio/istiod` or `oci://.../istiod`."""
    chart = props.get("chart")
    if not isinstance(chart, str):
        return chart  # None or UNKNOWN
    return chart.rstrip("/").rsplit("/", 1)[-1]


def _consensus(values: Iterable[Any]) -> Any:
    """The most common value (the first seen on a tie), or None if there is none."""
    counts = Counter(values)
    return counts.most_common(1)[0][0] if counts else None


def _quote(value: Any) -> str:
    return json.dumps(value, default=repr)


def _names(resources: Iterable[Resource]) -> str:
    return ", ".join(f'"{r.name}"' for r in resources)


# 1. Explicit Kubernetes providers -------------------------------------------------------------


def explicit_provider_violations(resource: Resource) -> list[str]:
    """A Kubernetes resource on a default provider would deploy to whatever cluster the ambient
    kubeconfig points at, not to the SKS cluster the program meant."""
    if not resource.type.startswith("kubernetes:") or resource.provider_name is None:
        return []
    if not DEFAULT_PROVIDER_NAME.match(resource.provider_name):
        return []
    return [
        f'{resource.describe()} targets the default Kubernetes provider "{resource.provider_name}" '
        "(the ambient kubeconfig); expected an explicit provider: its cluster's "
        '"<cluster>-k8s" provider, passed with ResourceOptions(provider=...)'
    ]


# 2. One meshID and one Istio version ----------------------------------------------------------


def istio_release_violations(resources: Iterable[Resource]) -> list[Violation]:
    """All istiod releases share one values.global.meshID and one chart version, and every
    base/istiod/gateway release uses that version."""
    releases = [
        (r, chart) for r in resources
        if r.type == HELM_RELEASE and (chart := chart_name(r.props)) in ISTIO_CHARTS
    ]
    istiods = [r for r, chart in releases if chart == "istiod"]
    violations: list[Violation] = []

    mesh_ids = {r.urn: get_path(r.props, "values", "global", "meshID") for r in istiods}
    expected_mesh = _consensus(v for v in mesh_ids.values() if isinstance(v, str) and v)
    sharing_mesh = [r for r in istiods if mesh_ids[r.urn] == expected_mesh]
    for release in istiods:
        mesh_id = mesh_ids[release.urn]
        if mesh_id is UNKNOWN or (expected_mesh is not None and mesh_id == expected_mesh):
            continue
        if not isinstance(mesh_id, str) or not mesh_id:
            expected = (f'"{expected_mesh}", the meshID of {_names(sharing_mesh)}' if expected_mesh
                        else "the one meshID every istiod release shares")
            message = f"{release.describe()} sets no values.global.meshID; expected {expected}"
        else:
            message = (f'{release.describe()} sets values.global.meshID "{mesh_id}"; expected '
                       f'"{expected_mesh}", the meshID of {_names(sharing_mesh)}: every istiod '
                       "of the mesh must share one meshID")
        violations.append(Violation(message, release.urn))

    versions = {r.urn: r.props.get("version") for r, _ in releases}
    # The istiod releases set the mesh's version; without any, the Istio releases agree among themselves.
    reference = istiods or [r for r, _ in releases]
    expected_version = _consensus(
        v for r in reference if isinstance(v := versions[r.urn], str) and v
    )
    on_version = [r for r in reference if versions[r.urn] == expected_version]
    for release, chart in releases:
        version = versions[release.urn]
        if version is UNKNOWN or (expected_version is not None and version == expected_version):
            continue
        expected = (f'"{expected_version}", the version of {_names(on_version)}' if expected_version
                    else "one pinned Istio version for every base, istiod and gateway release")
        if not isinstance(version, str) or not version:
            message = f"{release.describe()} (chart {chart}) pins no chart version; expected {expected}"
        else:
            message = (f'{release.describe()} (chart {chart}) uses chart version "{version}"; expected '
                       f"{expected}: base, istiod and gateway charts of one mesh must be one Istio release")
        violations.append(Violation(message, release.urn))
    return violations


# 3. Intermediate CAs under one root -----------------------------------------------------------


def _der_fingerprint(body: str) -> str | None:
    try:
        return hashlib.sha256(base64.b64decode("".join(body.split()), validate=True)).hexdigest()
    except (binascii.Error, ValueError):
        return None


def cert_fingerprint(pem: str) -> str:
    """SHA-256 of the first certificate's DER (what `openssl x509 -fingerprint -sha256` shows),
    or of the text itself if it holds no PEM certificate."""
    match = PEM_CERTIFICATE.search(pem)
    fingerprint = _der_fingerprint(match[1]) if match else None
    return fingerprint or hashlib.sha256("".join(pem.split()).encode()).hexdigest()


def cert_fingerprints(pem: str) -> list[str]:
    """The fingerprint of every certificate of a PEM bundle, in order."""
    return [f for body in PEM_CERTIFICATE.findall(pem) if (f := _der_fingerprint(body))]


def _short(fingerprint: str) -> str:
    return f"sha256:{fingerprint[:16]}"


def _stack_roots(resources: Sequence[Resource]) -> set[str]:
    """The fingerprints of the stack's own self-signed root CAs (two during a rotation)."""
    return {
        cert_fingerprint(pem) for r in resources
        if r.type == SELF_SIGNED_CERT and r.props.get("isCaCertificate") is True
        and isinstance(pem := r.props.get("certPem"), str) and pem
    }


def _mesh_trusted_roots(resources: Sequence[Resource]) -> set[str]:
    """The roots that every known `cacerts` trusts (root-cert.pem): a brought root is a root too."""
    bundles = [set(cert_fingerprints(ca.trusted_pem)) for ca in _known_cacerts(resources)]
    return set.intersection(*bundles) if bundles else set()


def intermediate_ca_violations(resources: Iterable[Resource]) -> list[Violation]:
    """Every LocallySignedCert is a CA (isCaCertificate, cert_signing) and all are signed by one
    root (one caCertPem: the stack's self-signed root if it has one)."""
    resources = list(resources)
    certs = [r for r in resources if r.type == LOCALLY_SIGNED_CERT]
    violations: list[Violation] = []
    for cert in certs:
        is_ca = cert.props.get("isCaCertificate")
        if is_ca is not UNKNOWN and is_ca is not True:
            violations.append(Violation(
                f"{cert.describe()} has isCaCertificate {_quote(is_ca)}; expected true: an Istio "
                "intermediate CA signs the workload certificates of its cluster", cert.urn))
        uses = cert.props.get("allowedUses")
        if uses is UNKNOWN or (isinstance(uses, list) and (CA_SIGNING_USE in uses or UNKNOWN in uses)):
            continue
        violations.append(Violation(
            f'{cert.describe()} has allowedUses {_quote(uses)}; expected "{CA_SIGNING_USE}" among them '
            "(with crl_signing, digital_signature, ...): without it the intermediate cannot sign",
            cert.urn))

    issuers: dict[str, Any] = {}
    for cert in certs:
        pem = cert.props.get("caCertPem")
        if pem is UNKNOWN:
            issuers[cert.urn] = UNKNOWN
        else:
            issuers[cert.urn] = cert_fingerprint(pem) if isinstance(pem, str) and pem else None
    # During a staged rotation the stack holds two roots that every cluster trusts: either may sign.
    allowed = _stack_roots(resources) | _mesh_trusted_roots(resources)
    if allowed:
        where = "the stack's self-signed root" if _stack_roots(resources) else "the root every cacerts trusts"
    else:
        consensus = _consensus(v for v in issuers.values() if isinstance(v, str))
        allowed = {consensus} if consensus else set()
        where = f"the root of {_names(r for r in certs if issuers[r.urn] == consensus)}"
    expected = " or ".join(_short(f) for f in sorted(allowed))
    for cert in certs:
        issuer = issuers[cert.urn]
        if issuer is UNKNOWN or (issuer is not None and issuer in allowed):
            continue
        if issuer is None:
            message = f"{cert.describe()} has no caCertPem; expected the mesh's single root CA"
        else:
            message = (f"{cert.describe()} is signed by CA {_short(issuer)}; expected {expected}, "
                       f"{where}: every intermediate must chain to the mesh's single root, or "
                       "cross-cluster mTLS fails")
        violations.append(Violation(message, cert.urn))
    return violations


# 3b. Root rotation order ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cacerts:
    resource: Resource
    issuing_root: str  # fingerprint of the last certificate of cert-chain.pem
    trusted_pem: str  # root-cert.pem


def _secret_files(props: Mapping[str, Any]) -> dict[str, Any] | None:
    """A Secret's files: `data` (base64: pulumi-kubernetes normalizes stringData into it, and the API
    server returns it) and `stringData`; None while any of it is unknown."""
    data, string_data = props.get("data"), props.get("stringData")
    if UNKNOWN in (data, string_data):
        return None
    files: dict[str, Any] = {}
    for key, value in (data.items() if isinstance(data, Mapping) else ()):
        if not isinstance(value, str):
            return None
        try:
            files[key] = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, ValueError):
            files[key] = None
    files.update(string_data if isinstance(string_data, Mapping) else {})
    return files


def _known_cacerts(resources: Iterable[Resource]) -> list[_Cacerts]:
    found = []
    for resource in resources:
        if resource.type != SECRET or get_path(resource.props, "metadata", "name") != CACERTS:
            continue
        files = _secret_files(resource.props) or {}
        chain, trusted = files.get("cert-chain.pem"), files.get("root-cert.pem")
        if isinstance(chain, str) and isinstance(trusted, str) and (roots := cert_fingerprints(chain)):
            found.append(_Cacerts(resource, roots[-1], trusted))
    return found


def rotation_order_violations(resources: Iterable[Resource]) -> list[Violation]:
    """Every root that a cluster issues from (the root of its cert-chain.pem) is in every cluster's
    root-cert.pem: a cluster switches to a new root only once every cluster trusts it, and a root
    leaves a root-cert.pem only once no cluster issues from it. Otherwise the workloads of one
    cluster reject the certificates of another."""
    cacerts = _known_cacerts(resources)
    violations: list[Violation] = []
    for issuer in cacerts:
        lacking = [ca.resource for ca in cacerts if issuer.issuing_root not in cert_fingerprints(ca.trusted_pem)]
        if lacking:
            violations.append(Violation(
                f"{issuer.resource.describe()} issues from root {_short(issuer.issuing_root)} (the last certificate "
                f"of its cert-chain.pem), which the root-cert.pem of {_names(lacking)} does not hold; expected every "
                "cacerts to trust every root a cacerts issues from: switch a cluster to a new root only once every "
                "cluster trusts it (phase trust), and drop the old root only once every cluster has switched "
                "(README: Certificates)", issuer.resource.urn))
    return violations


# 4. Load balancers ----------------------------------------------------------------------------


def _service_lb_violations(resource: Resource) -> list[str]:
    if get_path(resource.props, "spec", "type") != "LoadBalancer":
        return []
    return [
        f"{resource.describe()} has spec.type LoadBalancer; expected ClusterIP or NodePort: "
        f"only the Istio gateways ({', '.join(LOAD_BALANCED_GATEWAYS)}) may own a load balancer"
    ]


def _gateway_release_lb_violations(resource: Resource) -> list[str]:
    service_type = get_path(resource.props, "values", "service", "type")
    release_name = resource.props.get("name")
    # The gateway chart names its Service after values.name, else after the release.
    service_name = get_path(resource.props, "values", "name")
    if UNKNOWN in (service_type, release_name, service_name) or service_type not in (None, "LoadBalancer"):
        return []
    shown_type = "LoadBalancer" if service_type else "unset (the chart's default, LoadBalancer)"
    if release_name in LOAD_BALANCED_GATEWAYS and service_name in (None, release_name):
        return _stack_owned_nlb_violations(resource, shown_type)
    shown_name = f'"{release_name}"' if release_name else "unset"
    also = f', values.name "{service_name}"' if service_name not in (None, release_name) else ""
    return [
        f"{resource.describe()} installs Istio's gateway chart as release {shown_name}{also} with "
        f'values.service.type {shown_type}; expected values.service.type "ClusterIP" or "NodePort": only '
        f"the gateway releases {', '.join(LOAD_BALANCED_GATEWAYS)} may get a load balancer"
    ]


def _stack_owned_nlb_violations(resource: Resource, shown_type: str) -> list[str]:
    """A gateway's load balancer must be an NLB the stack owns, handed to the cloud controller;
    an NLB the controller creates itself outlives `pulumi destroy` (terraform-provider-exoscale#210)."""
    annotations = get_path(resource.props, "values", "service", "annotations")
    if annotations == UNKNOWN:
        return []
    annotations = annotations if isinstance(annotations, Mapping) else {}
    external = annotations.get(f"{CCM_ANNOTATION}external")
    nlb_id = annotations.get(f"{CCM_ANNOTATION}id")
    if external in ("true", UNKNOWN) and nlb_id not in (None, ""):
        return []
    return [
        f"{resource.describe()} gets a load balancer (values.service.type {shown_type}) that the cloud "
        f'controller would create itself; expected annotations "{CCM_ANNOTATION}id" (a stack-owned '
        f'exoscale.Nlb) and "{CCM_ANNOTATION}external": "true", so `pulumi destroy` removes the NLB'
    ]


def load_balancer_violations(resource: Resource) -> list[str]:
    """No Service of type LoadBalancer except the Istio gateways, and theirs on stack-owned NLBs: a
    Service object of type LoadBalancer, or a gateway-chart release other than the allowed gateways
    whose service type is LoadBalancer (the chart's default when unset), gets a public NLB."""
    if resource.type == SERVICE:
        return _service_lb_violations(resource)
    if resource.type == HELM_RELEASE and chart_name(resource.props) == "gateway":
        return _gateway_release_lb_violations(resource)
    return []


# 5. Production sizing -------------------------------------------------------------------------


def _cluster_level_violations(resource: Resource, stack: str) -> list[str]:
    level = resource.props.get("serviceLevel")
    if level is UNKNOWN or level == PROD_SERVICE_LEVEL:
        return []
    return [
        f'{resource.describe()} in production stack "{stack}" has serviceLevel {_quote(level)}; '
        f'expected "{PROD_SERVICE_LEVEL}" (starter has no HA control plane, etcd backup or SLA)'
    ]


def _nodepool_size_violations(resource: Resource, stack: str) -> list[str]:
    size = resource.props.get("size")
    if size is UNKNOWN or (isinstance(size, int | float) and not isinstance(size, bool) and size >= MIN_PROD_NODES):
        return []
    shown = int(size) if isinstance(size, float) and size.is_integer() else size
    return [
        f'{resource.describe()} in production stack "{stack}" has size {_quote(shown)}; '
        f"expected at least {MIN_PROD_NODES} nodes"
    ]


def production_violations(resource: Resource, prod_stacks: Sequence[str] = DEFAULT_PROD_STACKS) -> list[str]:
    """In a production stack every SKS cluster has the `pro` service level (HA control plane,
    etcd backups, SLA) and every nodepool at least 3 nodes. The stack comes from the URN."""
    stack = stack_of(resource.urn)
    if stack is None or not is_prod_stack(stack, prod_stacks):
        return []
    if resource.type == SKS_CLUSTER:
        return _cluster_level_violations(resource, stack)
    if resource.type == SKS_NODEPOOL:
        return _nodepool_size_violations(resource, stack)
    return []


def prod_stacks_from(config: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The policy config's `prodStacks` (stack names or fnmatch patterns), else ("prod",)."""
    stacks = (config or {}).get("prodStacks")
    if isinstance(stacks, str):
        return (stacks,)
    if isinstance(stacks, Sequence) and all(isinstance(s, str) for s in stacks):
        return tuple(stacks)
    return DEFAULT_PROD_STACKS


# pulumi-policy adapters -----------------------------------------------------------------------


def as_resource(obj: Any) -> Resource:
    """A ResourceValidationArgs or PolicyResource as plain data."""
    provider = obj.provider
    provider_name = None
    if provider is not None:
        provider_name = provider.name or str(provider.urn).rsplit("::", 1)[-1]
    return Resource(obj.resource_type, obj.name, obj.urn, to_plain(obj.props), provider_name)


def _validate_explicit_provider(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    for message in explicit_provider_violations(as_resource(args)):
        report_violation(message)


def _validate_istio_releases(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    for violation in istio_release_violations(as_resource(r) for r in args.resources):
        report_violation(violation.message, violation.urn)


def _validate_intermediate_cas(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    for violation in intermediate_ca_violations(as_resource(r) for r in args.resources):
        report_violation(violation.message, violation.urn)


def _validate_rotation_order(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    for violation in rotation_order_violations(as_resource(r) for r in args.resources):
        report_violation(violation.message, violation.urn)


def _validate_load_balancers(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    for message in load_balancer_violations(as_resource(args)):
        report_violation(message)


def _validate_production(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    for message in production_violations(as_resource(args), prod_stacks_from(args.get_config())):
        report_violation(message)


EXPLICIT_PROVIDER = ResourceValidationPolicy(
    name="kubernetes-explicit-provider",
    description="Every Kubernetes resource targets its cluster's explicit provider, never a default provider.",
    validate=_validate_explicit_provider,
)
ISTIO_RELEASES = StackValidationPolicy(
    name="istio-one-mesh-id-one-version",
    description="All istiod releases share one values.global.meshID and one chart version, "
                "and every base/istiod/gateway release uses that version.",
    validate=_validate_istio_releases,
)
INTERMEDIATE_CAS = StackValidationPolicy(
    name="mesh-ca-intermediates-share-one-root",
    description="Every LocallySignedCert is a CA (isCaCertificate, cert_signing) signed by the mesh's single root.",
    validate=_validate_intermediate_cas,
)
ROTATION_ORDER = StackValidationPolicy(
    name="mesh-ca-every-cluster-trusts-every-issuing-root",
    description="Every root a cacerts issues from (cert-chain.pem) is in every cacerts' root-cert.pem, so a root "
                "rotation never skips a phase.",
    validate=_validate_rotation_order,
)
LOAD_BALANCERS = ResourceValidationPolicy(
    name="load-balancers-only-for-gateways-on-stack-owned-nlbs",
    description="No Service of type LoadBalancer except the Istio gateways', each on an NLB the stack owns.",
    validate=_validate_load_balancers,
)
PRODUCTION = ResourceValidationPolicy(
    name="prod-pro-service-level-and-3-nodes",
    description=f'Production stacks use the "{PROD_SERVICE_LEVEL}" SKS service level and at least '
                f"{MIN_PROD_NODES} nodes per nodepool.",
    validate=_validate_production,
    config_schema=PolicyConfigSchema(properties={
        "prodStacks": {
            "type": "array",
            "items": {"type": "string"},
            "default": list(DEFAULT_PROD_STACKS),
            "description": "Stack names (fnmatch patterns) that are production.",
        },
    }),
)

POLICIES: list[Policy] = [EXPLICIT_PROVIDER, ISTIO_RELEASES, INTERMEDIATE_CAS, ROTATION_ORDER, LOAD_BALANCERS,
                          PRODUCTION]
