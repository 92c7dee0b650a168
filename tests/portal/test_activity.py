"""The Activity page as a person reads it: what people (and the Control Plane) did, in
words, the machine's routine claims and completions hidden until asked for, filtered by
who and what, each time "3 min ago" with the exact moment on hover."""

import re
from datetime import UTC, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from fleet.choices import AuditAction
from fleet.models import AuditEvent
from fleet.selectors import MACHINE_ACTIONS, ActorKind, actor_kind
from fleet.services.audit import SYSTEM, Actor, audit_record
from fleet.services.tokens import token_revoke
from portal.templatetags.audit_words import WORDINGS
from tests import factories

pytestmark = pytest.mark.django_db

ACTIVITY = reverse("portal:activity")


def event(customer, action, *, minutes_ago=0.0, **fields):
    created = factories.audit_event(customer, action=action, **fields)
    at = timezone.now() - timedelta(minutes=minutes_ago)
    AuditEvent.objects.filter(pk=created.pk).update(at=at)
    return created


def page(client, **params) -> str:
    """The list of events the page shows (the filter menus above it left out)."""
    response = client.get(ACTIVITY, params)
    assert response.status_code == 200
    html = response.content.decode()
    return html[html.index('id="events"') :]


@pytest.fixture
def busy(customer, owner):
    """A fleet at work: a person's change among the agents' claims and completions."""
    for n in range(5):
        job = str(40 + n)
        event(customer, "job.claim", actor_label="agent:coder-3", target_id=job)
        event(customer, "job.succeeded", actor_label="agent:coder-3", target_id=job)
    event(customer, "agent.heartbeat_state", actor_label="agent:coder-3", target_type="fleet.agent")
    return event(
        customer,
        "job.cancel",
        actor_user=owner.user,
        actor_label="olga",
        target_id="42",
        changes={"status": ["queued", "cancelled"]},
    )


def test_machine_events_are_hidden_until_asked_for(owner, busy):
    html = page(owner)
    assert 'olga cancelled <a href="/portal/jobs/42/">job #42</a>' in html
    assert "claimed" not in html and "finished" not in html
    shown = page(owner, machine="1")
    assert 'coder-3 finished <a href="/portal/jobs/42/">job #42</a>' in shown
    assert shown.count("coder-3 claimed") == 5
    assert "olga cancelled" in shown


def test_naming_a_machine_action_shows_it_without_the_toggle(owner, busy):
    html = page(owner, action="job.claim")
    assert html.count("coder-3 claimed") == 5
    assert "olga cancelled" not in html


def test_machine_actions_are_claims_completions_and_heartbeats_only():
    assert {
        AuditAction.JOB_CLAIM,
        AuditAction.JOB_SUCCEEDED,
        AuditAction.JOB_FAILED,
        AuditAction.JOB_REQUEUED,
        AuditAction.AGENT_HEARTBEAT_STATE,
    } <= MACHINE_ACTIONS
    people = {AuditAction.JOB_SUBMIT, AuditAction.JOB_CANCEL, AuditAction.TOKEN_REVOKE}
    assert not people & MACHINE_ACTIONS
    assert not {a for a in MACHINE_ACTIONS if a.startswith(("anomaly.", "rollout."))}


@pytest.fixture
def cast(customer, owner):
    """One event by each kind of actor."""
    return {
        "user": event(customer, "token.revoke", actor_user=owner.user, actor_label="olga"),
        "agent": event(
            customer,
            "agent.rotate_secret",
            actor_label="agent:coder-3",
            target_type="fleet.agent",
            target_repr="coder-3",
        ),
        "machine": event(customer, "token.redemption_refused", actor_label="machine:build-9"),
        "api_key": event(customer, "job.submit", actor_label="api-key:ci"),
        "system": event(customer, "token.expire", actor_label="system"),
        "command": event(customer, "token.mint", actor_label="seed_demo"),
    }


@pytest.mark.parametrize(
    ("actor", "expected"),
    [
        (ActorKind.USER, {"user"}),
        (ActorKind.AGENT, {"agent", "machine"}),
        (ActorKind.API_KEY, {"api_key"}),
        (ActorKind.SYSTEM, {"system", "command"}),
        ("", {"user", "agent", "machine", "api_key", "system", "command"}),
        ("nonsense", {"user", "agent", "machine", "api_key", "system", "command"}),
    ],
)
def test_the_actor_filter_picks_people_agents_api_keys_or_agentina(owner, cast, actor, expected):
    html = page(owner, actor=actor)
    said = {
        "user": "olga revoked",
        "agent": "coder-3</a> rotated its secret",
        "machine": "host build-9 presented",
        "api_key": "API key “ci” submitted",
        "system": "expired unused",
        "command": "seed_demo minted",
    }
    assert {name for name, words in said.items() if words in html} == expected


def test_actor_kinds_match_the_labels_the_services_write(customer, owner):
    agent = factories.agent(customer, name="coder-7")
    key = factories.api_key(customer, name="ci")
    actors = {
        ActorKind.AGENT: Actor.for_agent(agent),
        ActorKind.API_KEY: Actor.for_api_key(key),
        ActorKind.USER: Actor(user=owner.user, label="olga"),
        ActorKind.SYSTEM: SYSTEM,
    }
    for kind, actor in actors.items():
        written = audit_record(
            actor=actor, action=AuditAction.JOB_SUBMIT, target=agent, customer=customer
        )
        assert actor_kind(written) == kind, actor


def test_the_action_filter_lists_every_action_by_area(owner, cast):
    assert "seed_demo minted" not in page(owner, action="token.revoke")
    html = owner.get(ACTIVITY, {"action": "token.revoke"}).content.decode()
    assert "olga revoked" in html
    assert '<optgroup label="Activation tokens">' in html
    assert '<option value="job.claim" >Job claimed (machine)</option>' in html
    assert len(re.findall(r'<option value="[a-z_]+\.[a-z_]+"', html)) == len(AuditAction.values)


def test_events_read_as_sentences_never_raw_strings(owner, customer):
    finding = factories.anomaly(
        customer,
        kind="anti_pattern",
        fingerprint="anti_pattern:no_indexer:c2",
        message="The fleet has coders but no indexer. Add one indexer.",
    )
    event(
        customer,
        "anomaly.open",
        target_type="fleet.anomaly",
        target_id=str(finding.pk),
        target_repr=finding.fingerprint,
    )
    event(  # a finding since deleted: its kind, not its fingerprint
        customer,
        "anomaly.resolve",
        target_type="fleet.anomaly",
        target_id=str(finding.pk + 999),
        target_repr="anti_pattern:one_zone:c2",
        changes={"note": [None, "spread over two zones"]},
    )
    event(
        customer,
        "token.mint",
        actor_label="olga",
        target_type="fleet.activationtoken",
        target_repr="agtn_act_ab12… (outstanding)",
        changes={"role": [None, ""], "expires_at": [None, "2030-01-02T03:04:05+00:00"]},
    )
    event(
        customer,
        "membership.update",
        actor_label="olga",
        target_type="fleet.membership",
        target_repr="ann @ Acme (viewer)",
        changes={"role": ["viewer", "admin"]},
    )
    event(
        customer,
        "agent.activate",
        actor_label="agent:coder-3",
        target_type="fleet.agent",
        target_repr="coder-3",
        changes={"token": ["agtn_act_cd34", None], "host": [None, "build-9"]},
    )
    html = page(owner)
    assert "Agentina opened a finding:" in html
    assert "The fleet has coders but no indexer. Add one indexer." in html
    assert "Agentina resolved the finding: Fleet anti-pattern" in html
    assert "note: spread over two zones" in html
    assert "olga minted token agtn_act_ab12…" in html
    assert "expires at: 2030-01-02 03:04:05 UTC" in html
    assert "olga changed the role of ann" in html
    assert "role: viewer → admin" in html
    assert "coder-3</a> activated" in html
    assert "host: build-9 · token: was agtn_act_cd34" in html
    for raw in ("anti_pattern:", "role: ;", "role: ·", "(outstanding)", "fleet.", "None"):
        assert raw not in html, raw


def test_a_service_written_revocation_reads_as_the_issue_asks(owner, customer):
    token = factories.token(customer)
    token_revoke(token=token, actor=Actor(user=owner.user, label="olga"))
    assert f"olga revoked token {token.display_prefix}…" in page(owner)


def test_another_customers_finding_never_lends_its_message(owner, customer, other_customer):
    theirs = factories.anomaly(other_customer, kind="clock_skew", message="their secret host")
    event(
        customer,
        "anomaly.open",
        target_type="fleet.anomaly",
        target_id=str(theirs.pk),
        target_repr="clock_skew:9",
    )
    event(other_customer, "token.revoke", actor_label="mallory")
    html = page(owner)
    assert "their secret host" not in html and "mallory" not in html
    assert "opened a finding: Agent clock skew" in html


def test_every_action_has_its_sentence():
    assert set(AuditAction.values) <= set(WORDINGS)


def test_times_say_how_long_ago_with_the_exact_moment_on_hover(owner, customer):
    made = event(customer, "job.submit", minutes_ago=3.2)
    made.refresh_from_db()
    utc = made.at.astimezone(UTC)
    html = page(owner)
    assert (
        f'<time datetime="{utc.isoformat()}" title="{utc:%Y-%m-%d %H:%M:%S} UTC">3 min ago</time>'
        in html
    )
    old = event(customer, "job.submit", minutes_ago=60 * 50)
    assert "2 days ago" in page(owner)
    assert old.pk


def test_filters_swap_the_list_in_and_pages_keep_them(owner, customer):
    for n in range(55):
        event(customer, "job.claim", actor_label="agent:coder-3", target_id=str(n))
    response = owner.get(ACTIVITY, {"machine": "1", "actor": "agent"}, HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.lstrip().startswith('<section class="card" id="events">')
    assert 'href="?actor=agent&amp;machine=1&page=2"' in html


def test_empty_states_say_what_next(owner, customer, busy):
    assert "No event matches these filters" in page(owner, actor="api_key")
    AuditEvent.objects.exclude(action__in=MACHINE_ACTIONS).delete()
    html = page(owner)
    assert "Nothing has happened yet, apart perhaps from machine events" in html
    assert 'href="?machine=1"' in html


ACTIVITY_QUERIES = 5  # session, user, memberships, page count, page (findings' messages in it)


def test_the_page_costs_the_same_queries_for_one_event_or_a_page_full(
    owner, customer, django_assert_num_queries
):
    event(customer, "token.revoke", actor_label="olga")
    with django_assert_num_queries(ACTIVITY_QUERIES):
        page(owner)
    for n in range(30):
        finding = factories.anomaly(customer, message=f"finding {n}")
        event(customer, "anomaly.open", target_type="fleet.anomaly", target_id=str(finding.pk))
        event(customer, "job.succeeded", actor_label="agent:coder-3", target_id=str(n))
    for params in ({}, {"machine": "1"}, {"actor": "system", "action": "anomaly.open"}):
        with django_assert_num_queries(ACTIVITY_QUERIES):
            html = page(owner, **params)
    assert "finding 29" in html
