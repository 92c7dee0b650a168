from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from fleet.choices import TokenStatus
from fleet.models import ActivationToken, AuditEvent, CustomerApiKey
from fleet.services.api_keys import api_key_revoke
from fleet.services.audit import SYSTEM
from fleet.services.tokens import token_mint
from tests import factories
from tests.fleet.api.conftest import activate, activation_body

pytestmark = pytest.mark.django_db


def test_mint_tokens_shows_each_secret_once_and_the_seats(key_api, licensed):
    activate(licensed)
    response = key_api.post("/tokens", {"count": 3, "role": "tester", "expires_in_hours": 24})
    assert response.status_code == 201
    body = response.json()
    assert len(body["tokens"]) == 3
    assert {t["details"]["role"] for t in body["tokens"]} == {"tester"}
    assert all(t["token"].startswith("agtn_act_") for t in body["tokens"])
    assert body["seats"] == {"max_agents": 10, "used": 1, "free": 9, "outstanding_tokens": 3}
    listed = key_api.get("/tokens").json()["items"]
    assert "token" not in str(listed[0].keys())  # the secret never appears again
    assert all(t["token"] not in key_api.get("/tokens").content.decode() for t in body["tokens"])
    expiry = timezone.now() + timedelta(hours=24)
    assert abs(ActivationToken.objects.first().expires_at - expiry) < timedelta(minutes=1)
    assert AuditEvent.objects.filter(action="token.mint", actor_label="api-key:ci").count() == 3


def test_minting_more_tokens_than_free_seats_is_refused(customer):
    factories.license(customer, max_agents=2)
    activate(customer)
    response = key_api_for(customer).post("/tokens", {"count": 2})
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "license_full"
    assert (body["free"], body["used"], body["max_agents"]) == (1, 1, 2)
    assert "1 of 2 seats are free" in body["detail"]
    assert not ActivationToken.objects.filter(status=TokenStatus.OUTSTANDING).exists()
    # Outstanding tokens reserve nothing: two single mints both succeed.
    assert key_api_for(customer).post("/tokens", {"count": 1}).status_code == 201
    assert key_api_for(customer).post("/tokens", {"count": 1}).status_code == 201


def key_api_for(customer):
    from django.test import Client

    from fleet.services.api_keys import api_key_mint
    from tests.fleet.api.conftest import ApiClient

    return ApiClient(Client(), api_key_mint(customer=customer, name="k", actor=SYSTEM)[1])


def test_suspended_license_mints_nothing(key_api, licensed):
    licensed.licenses.update(suspended=True)
    response = key_api.post("/tokens", {"count": 1})
    assert (response.status_code, response.json()["code"]) == (403, "license_suspended")


def test_list_tokens_filters_and_pages_with_bounds(
    key_api, licensed, django_assert_max_num_queries
):
    for _ in range(5):
        token_mint(customer=licensed, actor=SYSTEM)
    redeemed = activate(licensed)
    page = key_api.get("/tokens?limit=2&offset=1").json()
    assert page["count"] == 6
    assert len(page["items"]) == 2
    done = key_api.get("/tokens?status=redeemed").json()["items"]
    assert [t["redeemed_by_agent_id"] for t in done] == [redeemed.agent.pk]
    assert done[0]["redeemed_by_host"] == redeemed.agent.host.hostname
    for query in (
        "limit=0",
        "limit=100000",
        "offset=-1",
        "offset=99999999999999999999",
        "status=lost",
    ):
        response = key_api.get(f"/tokens?{query}")
        assert response.status_code == 422, query
    for _ in range(3):
        activate(licensed)
    with django_assert_max_num_queries(4):  # key lookup, count, page (tokens with agents)
        assert key_api.get("/tokens?limit=50").status_code == 200


def test_expired_tokens_are_listed_as_expired_before_the_daily_job(key_api, licensed):
    token, _ = token_mint(customer=licensed, expires_in=timedelta(seconds=-1), actor=SYSTEM)
    assert key_api.get("/tokens?status=outstanding").json()["items"] == []
    [listed] = key_api.get("/tokens?status=expired").json()["items"]
    assert (listed["id"], listed["status"]) == (token.pk, "expired")


def test_revoke_is_idempotent_and_refuses_redeemed_tokens(key_api, licensed):
    token, _ = token_mint(customer=licensed, actor=SYSTEM)
    first = key_api.delete(f"/tokens/{token.pk}")
    again = key_api.delete(f"/tokens/{token.pk}")
    assert first.status_code == again.status_code == 200
    assert again.json()["status"] == "revoked"
    assert AuditEvent.objects.filter(action="token.revoke").count() == 1
    redeemed = activate(licensed).agent.activation_token
    response = key_api.delete(f"/tokens/{redeemed.pk}")
    assert (response.status_code, response.json()["code"]) == (409, "token_not_outstanding")


def test_another_customers_token_is_404_like_a_missing_one(key_api, licensed):
    other = factories.customer()
    theirs, _ = token_mint(customer=other, actor=SYSTEM)
    mine_missing = key_api.delete("/tokens/999999")
    not_mine = key_api.delete(f"/tokens/{theirs.pk}")
    assert not_mine.status_code == mine_missing.status_code == 404
    assert not_mine.json() == mine_missing.json()
    theirs.refresh_from_db()
    assert theirs.status == TokenStatus.OUTSTANDING
    assert theirs.pk not in [t["id"] for t in key_api.get("/tokens").json()["items"]]


def test_fleet_metrics_are_the_four_numbers(key_api, licensed, django_assert_max_num_queries):
    fresh = activate(licensed)
    stale = activate(licensed, version="1.8.0")
    activate(licensed, version="1.10.0")
    factories.release("1.8.0")
    stale.agent.__class__.objects.filter(pk=stale.agent.pk).update(
        last_heartbeat_at=timezone.now() - timedelta(minutes=10)
    )
    now = timezone.now()
    for minutes in (5, 10, 70):
        factories.job(
            licensed,
            role="coder",
            status="succeeded",
            agent=fresh.agent,
            finished_at=now - timedelta(minutes=minutes),
        )
    factories.job(licensed, role="coder")
    # Key lookup and touch, eight for the numbers, one for acceptance and cost.
    with django_assert_max_num_queries(11):
        body = key_api.get("/fleet/metrics").json()
    assert body["agents_active"] == 3
    assert body["agents_online"] == 2
    assert body["online_ratio"] == pytest.approx(2 / 3)
    assert (body["jobs_completed_last_hour"], body["jobs_completed_previous_hour"]) == (2, 1)
    assert body["throughput_trend"] == 2.0
    assert body["queue_depth"] == 1
    assert body["latest_version"] == "1.10.0"
    assert body["agents_not_on_latest"] == 2
    assert body["agents_minor_behind"] == 1  # 1.8.0 is two minors behind 1.10.0


def test_revoked_or_unknown_keys_are_401(key_api, licensed):
    assert key_api.get("/fleet/metrics").status_code == 200
    api_key_revoke(key=CustomerApiKey.objects.get(), actor=SYSTEM)
    response = key_api.get("/fleet/metrics")
    assert (response.status_code, response.json()["code"]) == (401, "unauthorized")


def test_key_endpoints_are_throttled_per_key_with_retry_after(key_api, licensed, settings):
    settings.API_THROTTLE_RATES = {"activate": "1000/min", "api_key": "3/min"}
    codes = [key_api.get("/fleet/metrics").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = key_api.get("/fleet/metrics")
    assert limited.json()["code"] == "rate_limited"
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert key_api_for(licensed).get("/fleet/metrics").status_code == 200  # another key


def test_activation_is_throttled_per_client_address_not_a_spoofable_header(
    anon, licensed, settings
):
    settings.API_THROTTLE_RATES = {"activate": "2/min", "api_key": "1000/min"}
    body = activation_body("agtn_act_nope")
    spoof = [
        anon.post("/agents/activate", body, HTTP_X_FORWARDED_FOR=f"10.0.0.{i}").status_code
        for i in range(3)
    ]
    assert spoof == [401, 401, 429]  # the header does not buy new quota
    settings.NINJA_NUM_PROXIES = 1  # behind one proxy, the proxy's last entry is the client
    assert (
        anon.post("/agents/activate", body, HTTP_X_FORWARDED_FOR="1.2.3.4, 5.6.7.8").status_code
        == 401
    )
    assert (
        anon.post("/agents/activate", body, HTTP_X_FORWARDED_FOR="9.9.9.9, 5.6.7.8").status_code
        == 401
    )
    assert anon.post("/agents/activate", body, HTTP_X_FORWARDED_FOR="5.6.7.8").status_code == 429


def test_issue_api_key_prints_the_key_once(licensed, capsys):
    call_command("issue_api_key", licensed.slug, "--name", "ci")
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("agtn_key_")
    assert "shown only now" in err
    stored = CustomerApiKey.objects.get()
    assert key not in (stored.digest, stored.display_prefix)
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="No customer"):
        call_command("issue_api_key", "nope")
