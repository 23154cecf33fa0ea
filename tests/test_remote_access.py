"""Remote secrets: decoded for every ordered pair of clusters, for 2 and 3 clusters."""

import base64
import itertools
import json

import pulumi
import pytest
import yaml

from components.istio import READER_TOKEN_SECRET
from components.remote_access import reader_kubeconfig
from testing import engine
from testing.mocks import MeshMocks, cluster_ca
from testing.program import Recording, is_wire_secret, run_failing_program, stack_config
from tests.harness import validate_kubernetes


def remote_secrets(recording: Recording) -> dict[tuple[str, str], object]:
    found = {}
    for secret in recording.k8s_objects("Secret"):
        name = secret.inputs["metadata"]["name"]
        if name.startswith("istio-remote-secret-"):
            found[(recording.cluster_of(secret), name.removeprefix("istio-remote-secret-"))] = secret
    return found


def cluster_names(recording: Recording) -> list[str]:
    return [c.name for c in recording.of_type("exoscale:index/sksCluster:SksCluster")]


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture(params=["dev", "three_clusters"])
def recording(request) -> Recording:
    return request.getfixturevalue(request.param)


def test_every_ordered_pair_of_clusters_gets_exactly_one_remote_secret(recording):
    names = cluster_names(recording)
    expected = set(itertools.permutations(names, 2))
    assert set(remote_secrets(recording)) == expected
    assert len(expected) == len(names) * (len(names) - 1)


def test_remote_secret_in_a_points_istiod_at_b_with_bs_reader_token(recording):
    clusters = {c.name: c for c in recording.of_type("exoscale:index/sksCluster:SksCluster")}
    for (holder, target), secret in remote_secrets(recording).items():
        metadata = secret.inputs["metadata"]
        assert metadata["namespace"] == "istio-system"
        assert metadata["labels"] == {"istio/multiCluster": "true"}
        assert metadata["annotations"] == {"networking.istio.io/cluster": target}
        assert list(secret.inputs["stringData"]) == [target], "the key must be the remote clusterName"
        kubeconfig = yaml.safe_load(secret.inputs["stringData"][target])
        (entry,) = kubeconfig["clusters"]
        assert entry["cluster"]["server"] == clusters[target].outputs["endpoint"]
        ca_pem, _ = cluster_ca(clusters[target].id)
        assert base64.b64decode(entry["cluster"]["certificate-authority-data"]).decode() == ca_pem
        (user,) = kubeconfig["users"]
        assert set(user["user"]) == {"token"}, "inline token only: no exec plugin, no files"
        claims = jwt_claims(user["user"]["token"])
        assert claims["cluster"] == target
        assert claims["sub"] == "system:serviceaccount:istio-system:istio-reader-service-account"
        assert kubeconfig["current-context"] == target
        assert holder != target


def test_remote_secrets_wait_for_the_targets_reader_rbac_from_istiod(recording):
    for (_, target), secret in remote_secrets(recording).items():
        assert recording.depends_on(secret, recording.named(f"{target}-istiod"))


def test_remote_secret_contents_are_pulumi_secrets(recording):
    for secret in remote_secrets(recording).values():
        assert is_wire_secret(secret.wire_inputs["stringData"])


def test_a_changed_remote_secret_is_updated_in_place_never_deleted_first(recording):
    # A deleted remote secret makes istiod drop that cluster's endpoints until it is back.
    for secret in remote_secrets(recording).values():
        provider = recording.by_urn(secret.provider_urn)
        (target,) = secret.inputs["stringData"]
        changed = {**secret.inputs, "stringData": {target: secret.inputs["stringData"][target] + "# new token"}}
        step = engine.next_step(secret.type, secret.inputs, changed, secret.replace_on_changes,
                                provider_inputs=provider.inputs)
        assert step == engine.UPDATE, secret.name


def test_remote_secrets_are_valid_kubernetes_secrets(recording):
    for secret in remote_secrets(recording).values():
        validate_kubernetes(secret)


def test_reader_token_secret_is_created_after_base_in_every_cluster(recording):
    for name in cluster_names(recording):
        token = recording.named(f"{name}-istio-reader-token")
        assert token.inputs["type"] == "kubernetes.io/service-account-token"
        assert token.inputs["metadata"]["annotations"] == {
            "kubernetes.io/service-account.name": "istio-reader-service-account"}
        assert token.inputs["metadata"]["namespace"] == "istio-system"
        assert recording.cluster_of(token) == name
        assert recording.depends_on(token, recording.named(f"{name}-istio-base"))
        validate_kubernetes(token)


def test_adding_a_cluster_adds_only_the_new_pairs_and_changes_no_existing_secret(dev, three_clusters):
    before, after = remote_secrets(dev), remote_secrets(three_clusters)
    assert set(after) - set(before) == {("cluster1", "cluster3"), ("cluster2", "cluster3"),
                                        ("cluster3", "cluster1"), ("cluster3", "cluster2")}
    for pair, secret in before.items():
        assert after[pair].urn == secret.urn
        assert after[pair].inputs == secret.inputs


class TokenControllerLeavesOut(MeshMocks):
    """A token controller that has not (or not fully) filled in one cluster's reader token."""

    def __init__(self, cluster: str, key: str) -> None:
        super().__init__()
        self.cluster, self.key = cluster, key

    def _kubernetes_core_v1_Secret(self, args, inputs, resource_id):
        outputs = super()._kubernetes_core_v1_Secret(args, inputs, resource_id)
        if outputs and self.clusters_by_provider[args.provider.rsplit("::", 1)[1]]["name"] == self.cluster:
            outputs["data"].pop(self.key)
        return outputs


@pytest.mark.parametrize("key", ["token", "ca.crt"])
def test_a_reader_token_secret_without_token_or_ca_fails_the_deploy_naming_the_cluster(key):
    # An empty bearer token would only show up at runtime, as 401s in every peer's istiod.
    error, registered = run_failing_program(stack_config("dev"), mocks=TokenControllerLeavesOut("cluster2", key))
    # A RunError is printed as its message alone, where any other exception gets a traceback.
    assert isinstance(error, pulumi.RunError), type(error)
    assert f"cluster cluster2: the reader token Secret {READER_TOKEN_SECRET} has no `{key}`" in str(error)
    assert not any(r.name == "cluster1-istio-remote-secret-cluster2" for r in registered)


@pytest.mark.parametrize("key", ["token", "ca.crt"])
def test_reader_kubeconfig_refuses_token_data_without_token_or_ca(key):
    data = {"token": base64.b64encode(b"reader-token").decode(), "ca.crt": base64.b64encode(b"CA PEM").decode()}
    document = yaml.safe_load(reader_kubeconfig("b", "https://b.example", data))
    assert base64.b64decode(document["clusters"][0]["cluster"]["certificate-authority-data"]) == b"CA PEM"
    assert document["users"][0]["user"]["token"] == "reader-token"
    with pytest.raises(pulumi.RunError, match=rf"cluster b: .*`{key}`"):
        reader_kubeconfig("b", "https://b.example", {k: v for k, v in data.items() if k != key})
