import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from fleet.choices import MemberRole
from fleet.models import ActivationToken, Agent, Anomaly, AuditEvent, CustomerApiKey, Job, Rollout
from fleet.services.audit import SYSTEM
from fleet.services.customers import membership_set
from tests import factories
from tests.portal.conftest import member_client

pytestmark = pytest.mark.django_db

PAGES = [
    "dashboard",
    "tokens",
    "agents",
    "hosts",
    "jobs",
    "anomalies",
    "upgrades",
    "plan",
    "api_keys",
    "activity",
    "alerts",
]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_for_a_member(owner, stocked, page):
    response = owner.get(reverse(f"portal:{page}"))
    assert response.status_code == 200
    assert "Content-Security-Policy" in response
    assert "script-src 'self' 'nonce-" in response["Content-Security-Policy"]


EMPTY_STATES = {
    "dashboard": "no baseline yet",
    "tokens": "Mint your first token above",
    "agents": "Mint an activation token",
    "hosts": "a host appears when its first agent activates",
    "jobs": "submit a job below",
    "anomalies": "Nothing unresolved",
    "upgrades": "start one below",
    "plan": "Enter the repository",
    "api_keys": "Mint one for your CI",
    "activity": "Nothing has happened yet",
    "alerts": "No channels yet",
}


@pytest.mark.parametrize("page", PAGES)
def test_empty_states_say_what_to_do_next(owner, customer, page):
    factories.license(customer)
    AuditEvent.objects.filter(customer=customer).delete()  # the license's own record
    response = owner.get(reverse(f"portal:{page}"))
    assert response.status_code == 200
    assert EMPTY_STATES[page] in response.content.decode()


def test_empty_tokens_page_invites_the_first_token(owner, customer):
    factories.license(customer)
    assert b"Mint your first token" in owner.get(reverse("portal:tokens")).content


def object_urls(objects):
    return [
        reverse("portal:agent_detail", args=[objects["agent"].pk]),
        reverse("portal:upgrade_detail", args=[objects["rollout"].pk]),
    ], [
        reverse("portal:token_revoke", args=[objects["token"].pk]),
        reverse("portal:agent_decommission", args=[objects["agent"].pk]),
        reverse("portal:job_cancel", args=[objects["job"].pk]),
        reverse("portal:anomaly_resolve", args=[objects["anomaly"].pk]),
        reverse("portal:anomaly_reopen", args=[objects["anomaly"].pk]),
        reverse("portal:api_key_revoke", args=[objects["key"].pk]),
        reverse("portal:upgrade_steer", args=[objects["rollout"].pk, "pause"]),
    ]


def test_another_customers_ids_are_404_everywhere(stocked, other_customer, django_user_model):
    outsider = member_client(other_customer, django_user_model, MemberRole.OWNER, "mallory")
    reads, writes = object_urls(stocked)
    for url in reads:
        assert outsider.get(url).status_code == 404, url
    for url in writes:
        assert outsider.post(url, {"note": "x"}).status_code == 404, url
    # nothing changed
    assert ActivationToken.objects.get().status == "outstanding"
    assert Agent.objects.filter(status="decommissioned").count() == 0
    assert Job.objects.get().status == "queued"
    assert Anomaly.objects.get(fingerprint="f").resolved_at is None
    assert CustomerApiKey.objects.get().revoked_at is None
    assert Rollout.objects.get().state == "canary"
    for page in ("tokens", "agents", "jobs", "anomalies", "upgrades", "api_keys", "activity"):
        html = outsider.get(reverse(f"portal:{page}")).content.decode()
        assert stocked["agent"].name not in html


def test_a_viewer_looks_but_every_write_is_refused(viewer, stocked):
    _, writes = object_urls(stocked)
    for url in writes:
        assert viewer.post(url, {"note": "x"}).status_code == 403, url
    for page, data in (
        ("tokens", {"count": 1}),
        ("jobs", {"role": "coder", "repo": "a", "ref": "m", "task": "t", "priority": 0}),
        ("api_keys", {"name": "k"}),
        ("upgrades", {"reason": "x"}),
    ):
        assert viewer.post(reverse(f"portal:{page}"), data).status_code == 403, page
    assert ActivationToken.objects.count() == 1
    assert Job.objects.count() == 1
    # The mint form is shown disabled, saying whom to ask (tests/portal/test_forbidden.py).
    assert b'disabled aria-describedby="mint-ask"' in viewer.get(reverse("portal:tokens")).content


def test_lists_issue_the_same_queries_for_few_and_many_rows(owner, customer, stocked):
    def counts():
        result = {}
        for page in (
            "tokens",
            "agents",
            "hosts",
            "jobs",
            "anomalies",
            "upgrades",
            "api_keys",
            "activity",
        ):
            with CaptureQueriesContext(connection) as ctx:
                assert owner.get(reverse(f"portal:{page}")).status_code == 200
            result[page] = len(ctx.captured_queries)
        return result

    few = counts()
    from fleet.services.api_keys import api_key_mint
    from fleet.services.tokens import token_mint

    for i in range(15):
        agent = factories.agent(customer, factories.host(customer))
        token, _ = token_mint(customer=customer, actor=SYSTEM)
        ActivationToken.objects.filter(pk=token.pk).update(status="redeemed")
        Agent.objects.filter(pk=agent.pk).update(activation_token=token)
        factories.job(customer, role="coder", agent=agent)
        api_key_mint(customer=customer, name=f"k{i}", actor=SYSTEM)
        from fleet.services.anomalies import anomaly_open

        anomaly_open(
            customer=customer,
            kind="agent_reported",
            fingerprint=f"f{i}",
            message="m",
            agent_id=agent.pk,
            actor=SYSTEM,
        )
    assert counts() == few


def test_csrf_holds_for_htmx_posts(customer, stocked, django_user_model):
    from django.test import Client

    user = django_user_model.objects.create_user("csrf-owner")
    membership_set(customer=customer, user=user, role=MemberRole.OWNER, actor=SYSTEM)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    url = reverse("portal:token_revoke", args=[stocked["token"].pk])
    assert client.post(url, HTTP_HX_REQUEST="true").status_code == 403
    page = client.get(reverse("portal:tokens"))
    token = (
        page.cookies["csrftoken"].value
        if "csrftoken" in page.cookies
        else client.cookies["csrftoken"].value
    )
    ok = client.post(url, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=token)
    assert ok.status_code == 200
    assert b"Revoked" in ok.content
    assert ActivationToken.objects.get(pk=stocked["token"].pk).status == "revoked"


def test_mint_shows_each_secret_once(owner, customer):
    factories.license(customer, max_agents=3)
    response = owner.post(
        reverse("portal:tokens"),
        {"count": 2, "role": "tester", "expires_in_days": 7, "note": "ci hosts"},
    )
    html = response.content.decode()
    secrets = set(re.findall(r"agtn_act_[0-9A-Za-z]{38}", html))
    assert response.status_code == 200
    assert "shown once" in html
    assert len(secrets) == 2
    again = owner.get(reverse("portal:tokens"))
    assert "no-cache" in again["Cache-Control"]  # and not kept by the browser either
    assert not any(s in again.content.decode() for s in secrets)
    assert ActivationToken.objects.count() == 2
    assert AuditEvent.objects.filter(action="token.mint", actor_user=owner.user).count() == 2


def test_minting_past_the_free_seats_shows_the_reason_next_to_the_field(owner, customer):
    factories.license(customer, max_agents=1)
    factories.agent(customer)
    response = owner.post(reverse("portal:tokens"), {"count": 1, "expires_in_days": 7})
    assert response.status_code == 422
    assert b"0 of 1 seats are free" in response.content


def test_login_page_and_lockout(client, customer, django_user_model, settings):
    settings.AXES_FAILURE_LIMIT = 3
    django_user_model.objects.create_user("ada", password="right-password-1")
    for _ in range(3):
        client.post(reverse("portal:login"), {"username": "ada", "password": "wrong"})
    locked = client.post(
        reverse("portal:login"), {"username": "ada", "password": "right-password-1"}
    )
    assert b"Too many failed sign-ins" in locked.content
    other_user = client.post(reverse("portal:login"), {"username": "bob", "password": "x"})
    assert b"Too many failed sign-ins" not in other_user.content


def test_login_rotates_the_session(client, customer, django_user_model):
    django_user_model.objects.create_user("ada", password="pw-for-tests-1")
    session = client.session
    session["seen"] = True
    session.save()
    before = session.session_key
    assert (
        client.post(
            reverse("portal:login"), {"username": "ada", "password": "pw-for-tests-1"}
        ).status_code
        == 302
    )
    assert client.cookies["sessionid"].value != before


def test_users_in_two_customers_switch(owner, customer, other_customer):
    membership_set(customer=other_customer, user=owner.user, role=MemberRole.VIEWER, actor=SYSTEM)
    factories.license(other_customer)
    owner.post(reverse("portal:switch"), {"customer": other_customer.slug})
    assert other_customer.name.encode() in owner.get(reverse("portal:dashboard")).content
    # a customer the user is not a member of is ignored
    third = factories.customer()
    owner.post(reverse("portal:switch"), {"customer": third.slug})
    assert third.name.encode() not in owner.get(reverse("portal:dashboard")).content


def test_a_user_without_customer_is_told_what_to_do(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("loner"))
    assert b"not a member of any customer" in client.get(reverse("portal:dashboard")).content


def test_owners_resolve_anomalies_and_steer_waves(owner, stocked):
    anomaly = stocked["anomaly"]
    owner.post(reverse("portal:anomaly_resolve", args=[anomaly.pk]), {"note": "cleaned up"})
    anomaly.refresh_from_db()
    assert anomaly.resolution_note == "cleaned up"
    rollout = stocked["rollout"]
    owner.post(reverse("portal:upgrade_steer", args=[rollout.pk, "pause"]), {"note": "hold"})
    rollout.refresh_from_db()
    assert rollout.state == "paused"
    page = owner.get(reverse("portal:upgrade_detail", args=[rollout.pk])).content.decode()
    assert "Resume" in page and "hold" in page
    assert "Resume anyway" in page and "at least 95% of the wave's agents online" in page

    floor = reverse("portal:upgrade_steer", args=[rollout.pk, "set_floor"])
    owner.post(floor, {"floor": "80", "note": "two hosts retire"})
    owner.post(floor, {"floor": "eighty", "note": "typo"})  # refused, said, nothing changed
    owner.post(floor, {"floor": "150", "note": "typo"})
    for hostile in ("NaN", "Infinity", "-0x1"):  # never a 500
        assert owner.post(floor, {"floor": hostile, "note": "x"}).status_code == 302
    rollout.refresh_from_db()
    assert str(rollout.online_ratio_floor) == "0.80"
    page = owner.get(reverse("portal:upgrade_detail", args=[rollout.pk])).content.decode()
    assert "at least 80% of the wave's agents online" in page
    assert "The floor is a share between 0% and 100%." in page


def test_a_staff_user_who_is_only_a_viewer_cannot_start_a_wave(
    customer, stocked, django_user_model
):
    staff_viewer = member_client(customer, django_user_model, MemberRole.VIEWER, "sv")
    staff_viewer.user.is_staff = True
    staff_viewer.user.save()
    from fleet.services.audit import SYSTEM
    from fleet.services.rollouts import rollout_abort

    rollout_abort(rollout=stocked["rollout"], actor=SYSTEM, reason="clear the way")
    response = staff_viewer.post(reverse("portal:upgrades"), {"reason": "sneaky"})
    assert response.status_code == 403
    assert Rollout.objects.count() == 1


def test_nul_bytes_in_filters_and_switches_are_harmless(owner, stocked):
    for query in (
        "q=%00",
        "status=%00",
        "role=x%00",
        "host=%00",
        "zone=%00",
        "version=%00",
        "page=abc",
        "page=99999999999999999999",
    ):
        assert owner.get(f"{reverse('portal:agents')}?{query}").status_code == 200, query
    assert owner.post(reverse("portal:switch"), {"customer": "\x00"}).status_code == 302


def test_an_htmx_poll_after_the_session_ended_redirects_the_page(client, customer):
    response = client.get(reverse("portal:dashboard"), HTTP_HX_REQUEST="true")
    assert response.status_code == 401
    assert response["HX-Redirect"].startswith(reverse("portal:login"))


def test_a_refusal_leaves_no_message_behind(viewer, stocked):
    assert (
        viewer.post(reverse("portal:token_revoke", args=[stocked["token"].pk])).status_code == 403
    )
    assert b"Only owners" not in viewer.get(reverse("portal:tokens")).content
    assert b'class="messages"' not in viewer.get(reverse("portal:tokens")).content
