"""plan_batches on its own: which agents upgrade together in a wave. It reads only the
agents it is given (role, host, zone), so these fleets are unsaved objects and the tests
run without a database (any query would fail them)."""

import math
import random
from collections import Counter
from decimal import Decimal

import pytest

from fleet.models import Agent, Host
from fleet.services.rollouts import plan_batches

ROLES = ["coder", "reviewer", "tester", "indexer"]


def fleet(*specs: str) -> list[Agent]:
    """Agents from "name:role@host.zone" specs, e.g. "c1:coder@h1.a"; hosts are shared by
    name; ids follow the order given."""
    hosts: dict[str, Host] = {}
    agents = []
    for pk, spec in enumerate(specs, start=1):
        name, rest = spec.split(":")
        role, place = rest.split("@")
        host_name, zone = place.split(".")
        if host_name not in hosts:
            hosts[host_name] = Host(pk=len(hosts) + 1, hostname=host_name, zone=zone)
        agents.append(Agent(pk=pk, name=name, role=role, host=hosts[host_name]))
    return agents


def names(batches: list[list[Agent]]) -> list[list[str]]:
    return [[agent.name for agent in batch] for batch in batches]


def groups(agent: Agent) -> list[tuple[str, object]]:
    return [("role", agent.role), ("zone", agent.host.zone), ("host", agent.host_id)]


def assert_well_planned(batches, members, fleet_, fraction):
    """What every plan promises: each member exactly once, no batch above
    ceil(fraction * members), and no batch holding every agent of a role, zone or host
    that has two or more agents in the fleet."""
    planned = [agent.pk for batch in batches for agent in batch]
    assert sorted(planned) == sorted(agent.pk for agent in members)
    size = max(1, math.ceil(len(members) * fraction))
    assert all(1 <= len(batch) <= size for batch in batches), [len(b) for b in batches]
    in_fleet = Counter(key for agent in fleet_ for key in groups(agent))
    for batch in batches:
        in_batch = Counter(key for agent in batch for key in groups(agent))
        for key, count in in_batch.items():
            if in_fleet[key] >= 2:
                assert count < in_fleet[key], (key, names(batches))


FOUR_CODERS = ("c1:coder@h1.a", "c2:coder@h2.a", "c3:coder@h3.b", "c4:coder@h4.b")
CODERS_APART = ("c1:coder@h1.a", "c2:coder@h2.b", "c3:coder@h3.c", "c4:coder@h4.d")

CASES = [
    pytest.param(
        FOUR_CODERS,
        None,
        "0.5",
        [["c1", "c3"], ["c2", "c4"]],
        id="each-batch-takes-one-agent-of-each-two-agent-zone",
    ),
    pytest.param(
        ("r1:reviewer@h1.a", "r2:reviewer@h2.a", "c1:coder@h3.a", "c2:coder@h4.a"),
        None,
        "0.5",
        [["r1", "c1"], ["r2", "c2"]],
        id="the-two-reviewers-upgrade-apart",
    ),
    pytest.param(
        ("a1:coder@h1.a", "a2:reviewer@h1.a", "t1:tester@h2.b"),
        None,
        "1.0",
        [["a1", "t1"], ["a2"]],
        id="whole-fleet-fraction-still-splits-a-shared-host",
    ),
    pytest.param(
        ("c1:coder@h1.a", "r1:reviewer@h2.b"),
        None,
        "1.0",
        [["c1", "r1"]],
        id="groups-of-one-cannot-be-spread",
    ),
    pytest.param(
        CODERS_APART,
        ("c2", "c3", "c4"),
        "1.0",
        [["c2", "c3", "c4"]],
        id="the-canary-left-out-keeps-its-role-serving",
    ),
    pytest.param(
        CODERS_APART,
        None,
        "1.0",
        [["c1", "c2", "c3"], ["c4"]],
        id="never-every-coder-at-once",
    ),
    pytest.param(
        ("c1:coder@h1.a", "c2:coder@h2.b", "c3:coder@h3.c"),
        None,
        "0.01",
        [["c1"], ["c2"], ["c3"]],
        id="a-tiny-fraction-is-one-agent-a-batch",
    ),
    pytest.param(("c1:coder@h1.a",), None, "0.25", [["c1"]], id="one-member"),
    pytest.param(("c1:coder@h1.a",), None, "1.0", [["c1"]], id="one-member-whole-fraction"),
    pytest.param(FOUR_CODERS, (), "0.25", [], id="no-members-no-batches"),
]


@pytest.mark.parametrize(("specs", "member_names", "fraction", "expected"), CASES)
def test_plan(specs, member_names, fraction, expected):
    fleet_ = fleet(*specs)
    members = fleet_ if member_names is None else [a for a in fleet_ if a.name in member_names]
    batches = plan_batches(members, fleet_, Decimal(fraction))
    assert names(batches) == expected
    assert_well_planned(batches, members, fleet_, Decimal(fraction))


@pytest.mark.parametrize(
    ("fraction", "sizes"),
    [("0.25", [3, 3, 3, 1]), ("0.1", [1] * 10), ("0.5", [5, 5]), ("0.34", [4, 4, 2])],
)
def test_batches_are_the_fraction_of_the_members_rounded_up(fraction, sizes):
    """Ten coders, each on a host of its own, five in each of two zones: nothing to
    spread, so the fraction alone decides."""
    fleet_ = fleet(*[f"c{i}:coder@h{i}.{'ab'[i > 5]}" for i in range(1, 11)])
    batches = plan_batches(fleet_, fleet_, Decimal(fraction))
    assert [len(batch) for batch in batches] == sizes
    assert_well_planned(batches, fleet_, fleet_, Decimal(fraction))


def test_the_input_order_does_not_change_the_plan():
    fleet_ = fleet(
        "c1:coder@h1.a", "c2:coder@h1.a", "r1:reviewer@h2.a", "t1:tester@h3.b", "c3:coder@h3.b"
    )
    plan = names(plan_batches(fleet_, fleet_, Decimal("0.4")))
    assert names(plan_batches(fleet_[::-1], fleet_[::-1], Decimal("0.4"))) == plan


@pytest.mark.parametrize("seed", range(40))
def test_any_fleet_is_planned_whole_and_spread(seed):
    rng = random.Random(seed)
    zone_of_host = [f"z{rng.randrange(3)}" for _ in range(rng.randint(1, 6))]
    specs = []
    for i in range(rng.randint(1, 30)):
        host = rng.randrange(len(zone_of_host))
        specs.append(f"a{i}:{rng.choice(ROLES)}@h{host}.{zone_of_host[host]}")
    fleet_ = fleet(*specs)
    members = [a for a in fleet_ if rng.random() < 0.8] or fleet_[:1]
    fraction = Decimal(rng.choice(["0.05", "0.1", "0.25", "0.5", "0.75", "0.99", "1"]))
    batches = plan_batches(members, fleet_, fraction)
    assert_well_planned(batches, members, fleet_, fraction)


def test_a_batch_mixes_zones_when_it_can():
    """Four single-agent hosts in each of two zones, batches of two: each batch could
    take one agent of each zone ("round-robin over zones, then hosts, so each batch
    mixes them")."""
    fleet_ = fleet(*[f"c{i}:coder@h{i}.{'ab'[i > 4]}" for i in range(1, 9)])
    batches = plan_batches(fleet_, fleet_, Decimal("0.25"))
    assert all(len({agent.host.zone for agent in batch}) == 2 for batch in batches), names(batches)
