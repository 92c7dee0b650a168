from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.choices import AgentRole, AgentStatus, Channel, RolloutState, RolloutTargetState
from fleet.errors import NotFound
from fleet.models import Agent, Rollout, RolloutTarget
from fleet.secrets import SecretKind, secret_mint
from fleet.selectors import (
    UpgradeOrder,
    agent_filter_choices,
    agent_for_secret,
    agent_get,
    agent_job_cap,
    agent_latest_release,
    agent_search,
    agent_upgrade_order,
    host_list,
)
from tests import factories

pytestmark = pytest.mark.django_db


def agent_with_secret(customer, **kwargs):
    """An agent and the plaintext secret it authenticates with."""
    agent = factories.agent(customer, **kwargs)
    minted = secret_mint(SecretKind.AGENT_SECRET)
    Agent.objects.filter(pk=agent.pk).update(secret_digest=minted.digest)
    return agent, minted.plaintext


def offer(agent, release, *, rollout_state=RolloutState.CANARY, state=RolloutTargetState.OFFERED):
    rollout = Rollout.objects.create(customer=agent.customer, release=release, state=rollout_state)
    RolloutTarget.objects.create(
        rollout=rollout, agent=agent, batch=0, state=state, from_version=agent.version
    )
    return rollout


# --- the hot path: an agent by its secret, with its facts --------------------------------


def test_an_agent_is_found_by_its_secret_with_every_fact_in_one_query(
    customer, django_assert_num_queries
):
    factories.license(customer, channel=Channel.BETA, max_concurrent_tasks_per_agent=3)
    factories.release("1.1.0", yanked=True)
    target = factories.release("1.2.0")
    factories.release("1.3.0-beta.1", channel=Channel.BETA)
    agent, secret = agent_with_secret(customer, version="1.1.0")
    rollout = offer(agent, target)

    with django_assert_num_queries(1):
        found = agent_for_secret(secret)
        facts = (
            agent_latest_release(found),
            agent_upgrade_order(found),
            agent_job_cap(found),
            found.facts.on_yanked if found.facts else None,
        )

    assert found == agent
    assert facts == ("1.3.0-beta.1", UpgradeOrder(version="1.2.0", rollout_id=rollout.pk), 3, True)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-1],  # truncated
        lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),  # checksum no longer matches
        lambda s: s.replace("agtn_agt_", "agtn_key_", 1),  # another kind of secret
        lambda s: "",
    ],
)
def test_a_malformed_secret_is_refused_without_a_query(customer, mangle, django_assert_num_queries):
    _, secret = agent_with_secret(customer)
    with django_assert_num_queries(0):
        assert agent_for_secret(mangle(secret)) is None


def test_an_unknown_secret_is_refused(customer):
    agent_with_secret(customer)
    assert agent_for_secret(secret_mint(SecretKind.AGENT_SECRET).plaintext) is None


def test_a_decommissioned_agents_secret_is_refused(customer):
    _, secret = agent_with_secret(customer, status=AgentStatus.DECOMMISSIONED)
    assert agent_for_secret(secret) is None


def test_a_stable_license_sees_only_stable_releases_and_no_license_means_no_cap(
    customer, other_customer
):
    factories.license(customer, channel=Channel.STABLE, max_concurrent_tasks_per_agent=2)
    factories.release("1.2.0")
    factories.release("1.3.0-beta.1", channel=Channel.BETA)
    _, licensed = agent_with_secret(customer)
    _, unlicensed = agent_with_secret(other_customer)

    agent = agent_for_secret(licensed)
    assert (agent_latest_release(agent), agent_job_cap(agent)) == ("1.2.0", 2)
    agent = agent_for_secret(unlicensed)
    assert (agent_latest_release(agent), agent_job_cap(agent)) == ("1.2.0", 0)


@pytest.mark.parametrize(
    ("rollout_state", "target_state"),
    [
        (RolloutState.PAUSED, RolloutTargetState.OFFERED),
        (RolloutState.ROLLING, RolloutTargetState.PENDING),
        (RolloutState.ROLLING, RolloutTargetState.SUCCEEDED),
    ],
)
def test_only_an_offer_in_a_moving_rollout_is_an_upgrade_order(
    customer, rollout_state, target_state
):
    agent, secret = agent_with_secret(customer)
    offer(agent, factories.release("2.0.0"), rollout_state=rollout_state, state=target_state)
    assert agent_upgrade_order(agent_for_secret(secret)) is None


def test_a_rolling_offer_is_an_upgrade_order(customer):
    agent, secret = agent_with_secret(customer)
    rollout = offer(agent, factories.release("2.0.0"), rollout_state=RolloutState.ROLLING)
    assert agent_upgrade_order(agent_for_secret(secret)) == UpgradeOrder("2.0.0", rollout.pk)


# --- the portal's agent pages ------------------------------------------------------------


def test_another_customers_agent_is_as_missing_as_a_deleted_one(customer, other_customer):
    mine, theirs = factories.agent(customer), factories.agent(other_customer)
    assert agent_get(customer, mine.pk) == mine
    with pytest.raises(NotFound) as foreign:
        agent_get(customer, theirs.pk)
    with pytest.raises(NotFound) as missing:
        agent_get(customer, theirs.pk + 1000)
    assert foreign.value.as_body() == missing.value.as_body()


@pytest.fixture
def fleet(customer, other_customer):
    """Five agents of the customer on two hosts in two zones, and one of another customer."""
    a = factories.host(customer, hostname="build-a", machine_id="m-aaa", zone="zone-a")
    b = factories.host(customer, hostname="build-b", machine_id="m-bbb", zone="zone-b")
    agents = {
        "alpha": factories.agent(customer, a, name="alpha", unit_name="agentina@alpha"),
        "bravo": factories.agent(
            customer, a, name="bravo", role=AgentRole.TESTER, version="1.10.0"
        ),
        "charlie": factories.agent(
            customer,
            b,
            name="charlie",
            status=AgentStatus.OFFLINE,
            version="1.9.0",
            last_heartbeat_at=timezone.now() - timedelta(minutes=10),
        ),
        "delta": factories.agent(customer, b, name="delta", role=AgentRole.TESTER),
        "retired": factories.agent(
            customer, b, name="retired", status=AgentStatus.DECOMMISSIONED, version="0.1.0"
        ),
    }
    factories.agent(other_customer, name="alpha-elsewhere", role=AgentRole.TESTER)
    return agents


def names(agents):
    return [a.name for a in agents]


def test_the_agent_list_leaves_out_decommissioned_agents_and_sorts_by_status_then_name(
    customer, fleet
):
    assert names(agent_search(customer, {})) == ["charlie", "alpha", "bravo", "delta"]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"status": "decommissioned"}, ["retired"]),
        ({"status": "offline"}, ["charlie"]),
        ({"role": "tester"}, ["bravo", "delta"]),
        ({"host": "build-a"}, ["alpha", "bravo"]),
        ({"zone": "zone-b"}, ["charlie", "delta"]),
        ({"zone": "zone-b", "role": "tester"}, ["delta"]),
        ({"version": "1.10.0"}, ["bravo"]),
        ({"version": "v1.9.0"}, ["charlie"]),
        ({"version": "1.10"}, []),  # not a version: nothing, not an error
        ({"q": "ALP"}, ["alpha"]),  # name, any case
        ({"q": "agentina@alpha"}, ["alpha"]),  # unit
        ({"q": "build-b"}, ["charlie", "delta"]),  # hostname
        ({"q": "m-aaa"}, ["alpha", "bravo"]),  # machine id
        ({"q": "elsewhere"}, []),  # another customer's agent
        ({"status": "", "role": ""}, ["charlie", "alpha", "bravo", "delta"]),
    ],
)
def test_the_agent_list_filters_and_searches(customer, fleet, filters, expected):
    assert names(agent_search(customer, filters)) == expected


def test_filter_menus_offer_what_the_active_fleet_has_in_two_bounded_queries(
    customer, fleet, django_assert_num_queries
):
    factories.agent(customer, name="zoneless", host=factories.host(customer, zone=""))
    with django_assert_num_queries(2):
        choices = agent_filter_choices(customer)
    assert choices == {
        "versions": ["1.0.0", "1.9.0", "1.10.0"],  # semver order; the retired 0.1.0 is gone
        "zones": ["zone-a", "zone-b"],  # hosts are typed, never listed whole
    }


def test_hosts_count_their_active_agents_by_role_and_presence(customer, fleet):
    factories.host(customer, hostname="empty", zone="zone-a")
    rows = {h.hostname: (h.n_agents, h.n_testers, h.n_online) for h in host_list(customer)}
    assert rows == {"build-a": (2, 1, 2), "empty": (0, 0, 0), "build-b": (2, 1, 1)}
    assert [h.hostname for h in host_list(customer)] == ["build-a", "empty", "build-b"]
