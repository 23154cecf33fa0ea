"""bench/graph.py on hand-made graphs, and the real program's critical path as clusters are added."""

from __future__ import annotations

import graphlib
from dataclasses import dataclass, field

import pytest

from bench.graph import DURATIONS, OTHER_MINUTES, SKS_CLUSTER, critical_path, finish_times, serial_minutes
from bench.run import generated_config
from testing.program import run_program

WORK = "test:index:Work"  # a custom resource type whose duration each test sets


@dataclass
class Node:
    name: str
    dependencies: set[str] = field(default_factory=set)
    type: str = WORK
    custom: bool = True
    parent: str = ""
    provider_urn: str = ""

    @property
    def urn(self) -> str:
        return f"urn:pulumi:bench::test::{self.type}::{self.name}"

    @property
    def all_dependencies(self) -> set[str]:
        return self.dependencies | ({self.provider_urn} if self.provider_urn else set())


def work(name: str, minutes: float, *after: Node, **kwargs) -> tuple[Node, dict[str, float]]:
    node = Node(name, {a.urn for a in after}, type=f"test:index:{name}", **kwargs)
    return node, {node.type: minutes}


def graph(*entries: tuple[Node, dict[str, float]]) -> tuple[list[Node], dict[str, float]]:
    durations: dict[str, float] = {}
    for _, minutes in entries:
        durations.update(minutes)
    return [node for node, _ in entries], durations


def names(chain: list) -> list[str]:
    return [node.name for node in chain]


def test_diamond_takes_the_longer_side_and_serial_adds_everything():
    a = work("a", 1)
    b = work("b", 2, a[0])
    c = work("c", 5, a[0])
    d = work("d", 1, b[0], c[0])
    resources, durations = graph(d, c, b, a)  # registration order does not matter
    minutes, chain = critical_path(resources, durations)
    assert minutes == 7
    assert names(chain) == ["a", "c", "d"]
    assert serial_minutes(resources, durations) == 9


def test_a_component_costs_nothing_but_what_it_waits_for_counts():
    cluster = work("cluster", 2)
    # A component resource: its type is in the table, yet as a component it costs 0.
    component = work("component", 100, cluster[0], custom=False)
    release = work("release", 3, component[0])
    resources, durations = graph(cluster, component, release)
    minutes, chain = critical_path(resources, durations)
    assert minutes == 5
    assert names(chain) == ["cluster", "component", "release"]
    assert serial_minutes(resources, durations) == 5


def test_parallel_branches_cost_the_longest_branch_and_serial_the_sum():
    branches = []
    for i, minutes in enumerate((3, 4, 2)):
        first = work(f"first-{i}", 1)
        branches += [first, work(f"second-{i}", minutes, first[0])]
    resources, durations = graph(*branches)
    minutes, chain = critical_path(resources, durations)
    assert minutes == 5
    assert names(chain) == ["first-1", "second-1"]
    assert serial_minutes(resources, durations) == 3 * 1 + 3 + 4 + 2
    assert serial_minutes(resources, durations) / minutes == pytest.approx(2.4)


def test_equal_branches_give_the_same_chain_whatever_the_registration_order():
    a, b = work("a", 1), work("b", 1)
    resources, durations = graph(a, b)
    assert names(critical_path(resources, durations)[1]) == names(critical_path(resources[::-1], durations)[1])


def test_providers_cost_nothing_but_order_what_they_serve():
    cluster = Node("c1", type=SKS_CLUSTER)
    provider = Node("c1-k8s", {cluster.urn}, type="pulumi:providers:kubernetes")
    other_provider = Node("other", {cluster.urn}, type="pulumi:providers:random")
    secret = Node("secret", provider_urn=provider.urn, type="kubernetes:core/v1:Secret")
    minutes, chain = critical_path([cluster, provider, other_provider, secret])
    assert minutes == DURATIONS[SKS_CLUSTER] + OTHER_MINUTES
    assert names(chain) == ["c1", "c1-k8s", "secret"]
    assert serial_minutes([cluster, provider, other_provider, secret]) == DURATIONS[SKS_CLUSTER] + OTHER_MINUTES


def test_children_wait_for_a_custom_parent_and_the_stack_is_not_a_node():
    parent = work("parent", 2)
    child = work("child", 1, parent=parent[0].urn)
    orphan = work("orphan", 1, parent="urn:pulumi:bench::test::pulumi:pulumi:Stack::test-bench")
    resources, durations = graph(parent, child, orphan)
    assert finish_times(resources, durations)[child[0].urn] == 3
    assert finish_times(resources, durations)[orphan[0].urn] == 1


def test_a_component_that_only_parents_the_chain_is_left_out_of_it():
    component = work("component", 0, custom=False)
    first = work("first", 1, parent=component[0].urn)
    resources, durations = graph(component, first)
    assert critical_path(resources, durations) == (1, [first[0]])


def test_a_cycle_is_an_error():
    a = Node("a")
    b = Node("b", {a.urn})
    a.dependencies.add(b.urn)
    with pytest.raises(graphlib.CycleError):
        critical_path([a, b], {WORK: 1})


def test_adding_a_cluster_does_not_lengthen_the_deploy():
    # ECDSA keys keep the mocks fast (RSA-4096 keys take seconds to generate and to load); the
    # resource graph is the same with either algorithm.
    recordings = {n: run_program({**generated_config(n), "caKeyAlgorithm": "ECDSA"}) for n in (2, 3)}
    (two, chain_two), (three, chain_three) = (critical_path(recordings[n].resources) for n in (2, 3))
    assert two == three, (names(chain_two), names(chain_three))
    assert serial_minutes(recordings[3].resources) > serial_minutes(recordings[2].resources)
