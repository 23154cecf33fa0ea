"""The next-`up` model (testing/engine.py) that the day-2 tests rely on: each rule can fail."""

from testing import engine

CERT = "tls:index/selfSignedCert:SelfSignedCert"
SECRET = "kubernetes:core/v1:Secret"
SKS = "exoscale:index/sksCluster:SksCluster"


def test_unchanged_inputs_are_a_same_step_and_a_provider_replace_on_change_property_replaces():
    old = {"subject": {"organization": "a"}, "earlyRenewalHours": 1}
    assert engine.next_step(CERT, old, old) == engine.SAME
    assert engine.next_step(CERT, old, {**old, "subject": {"organization": "b"}}) == engine.REPLACE
    assert engine.next_step(CERT, old, {**old, "earlyRenewalHours": 2}) == engine.UPDATE


def test_ignore_changes_keeps_the_old_value_and_replace_on_changes_forces_a_replacement():
    old = {"subject": {"organization": "a"}, "earlyRenewalHours": 1}
    goal = engine.apply_ignore_changes(old, {**old, "subject": {"organization": "b"}}, ["subject"])
    assert engine.next_step(CERT, old, goal) == engine.SAME
    assert engine.next_step(CERT, old, {**old, "earlyRenewalHours": 2}, ["earlyRenewalHours"]) == engine.REPLACE


def test_a_replaced_provider_replaces_what_it_manages():
    inputs = {"metadata": {"name": "x"}}
    assert engine.next_step(SECRET, inputs, inputs, provider_replaced=True) == engine.REPLACE


def test_secret_data_replaces_unless_the_provider_makes_secrets_mutable():
    old, new = {"stringData": {"a": "1"}}, {"stringData": {"a": "2"}}
    assert engine.next_step(SECRET, old, new, provider_inputs={}) == engine.REPLACE
    assert engine.next_step(SECRET, old, new, provider_inputs={"enableSecretMutable": "true"}) == engine.UPDATE


def test_a_change_to_create_only_sks_fields_is_an_update_that_does_nothing():
    old = {"zone": "de-fra-1", "cni": "calico", "labels": {}}
    assert engine.next_step(SKS, old, {**old, "cni": "cilium"}) == engine.IGNORED_UPDATE
    assert engine.next_step(SKS, old, {**old, "cni": "cilium", "labels": {"a": "b"}}) == engine.UPDATE
    assert engine.next_step(SKS, old, {**old, "zone": "at-vie-2"}) == engine.REPLACE
