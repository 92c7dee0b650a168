import pytest
from django.db import connection
from django.db.models import Q
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from fleet.choices import AgentStatus, JobStatus, RolloutState
from fleet.models import (
    ActivationToken,
    Anomaly,
    AuditEvent,
    Customer,
    License,
    Membership,
    Release,
    Rollout,
)
from fleet.services.audit import SYSTEM, audit_record
from fleet.services.snapshots import fleet_snapshots_take
from tests import factories

pytestmark = pytest.mark.django_db

CHANGELISTS = [
    "customer",
    "license",
    "release",
    "activationtoken",
    "host",
    "agent",
    "job",
    "anomaly",
    "rollout",
    "fleetsnapshot",
    "auditevent",
]


def _fleet_rows(n: int) -> None:
    """n rows in every admin list, each with the relations its columns show."""
    start = Customer.objects.count()
    now = timezone.now()
    for i in range(n):
        customer = factories.customer()
        factories.license(customer)
        token = factories.token(
            customer, display_prefix=f"agtn_act_{i}", expires_at=now, status="redeemed"
        )
        agent = factories.agent(customer, activation_token=token, version=f"1.{start + i}.0")
        factories.release(f"2.{start + i}.0")
        factories.job(customer, role=agent.role, status=JobStatus.RUNNING, agent=agent)
        factories.anomaly(
            customer,
            agent=agent,
            kind="agent_offline",
            fingerprint=f"f{i}",
            message="silent",
        )
        rollout = factories.rollout(customer, Release.objects.last(), state=RolloutState.ROLLING)
        factories.rollout_target(rollout, agent)
        factories.snapshot(customer, taken_at=now, agents_total=1)
        audit_record(actor=SYSTEM, action="test.row", target=agent, customer=customer)


def _count(client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(ctx.captured_queries)


def test_admin_list_pages_issue_the_same_queries_for_10_and_100_rows(staff_client):
    urls = {model: reverse(f"admin:fleet_{model}_changelist") for model in CHANGELISTS}
    _fleet_rows(10)
    small = {model: _count(staff_client, url) for model, url in urls.items()}
    _fleet_rows(90)
    big = {model: _count(staff_client, url) for model, url in urls.items()}
    assert big == small
    for url in urls.values():  # each page really lists 100 rows
        assert b"100 " in staff_client.get(url).content


def test_admin_lists_never_count_a_table_whole(staff_client, monkeypatch):
    """A changelist's count stops at COUNT_CAP + 1 rows and no count reads a table whole
    (the open findings above a list are a filtered count): a year of audit events costs a
    page what a day does."""
    monkeypatch.setattr("fleet.policy.COUNT_CAP", 5)
    _fleet_rows(8)
    for model in CHANGELISTS:
        url = reverse(f"admin:fleet_{model}_changelist")
        with CaptureQueriesContext(connection) as ctx:
            assert staff_client.get(url, {"q": ""}).status_code == 200
        counts = [q["sql"] for q in ctx.captured_queries if q["sql"].startswith("SELECT COUNT(*)")]
        assert any("LIMIT 6) subquery" in sql for sql in counts), (model, counts)  # the list's
        whole = [sql for sql in counts if "LIMIT" not in sql and "WHERE" not in sql]
        assert not whole, (model, whole)


@pytest.mark.parametrize("model", CHANGELISTS)
def test_admin_pages_refuse_non_staff(client, django_user_model, model):
    url = reverse(f"admin:fleet_{model}_changelist")
    assert client.get(url).status_code == 302
    client.force_login(django_user_model.objects.create_user("member"))
    response = client.get(url)
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_change_pages_render_with_secrets_out_of_sight(staff_client):
    _fleet_rows(1)
    agent_page = staff_client.get(
        reverse("admin:fleet_agent_change", args=[factories.Agent.objects.get().pk])
    )
    assert agent_page.status_code == 200
    assert factories.Agent.objects.get().secret_digest.encode() not in agent_page.content
    token = ActivationToken.objects.get()
    token_page = staff_client.get(reverse("admin:fleet_activationtoken_change", args=[token.pk]))
    assert token_page.status_code == 200
    assert token.digest.encode() not in token_page.content
    for name in ("customer", "rollout", "release", "license"):
        obj = {"customer": Customer, "rollout": Rollout, "release": Release, "license": License}[
            name
        ].objects.first()
        assert (
            staff_client.get(reverse(f"admin:fleet_{name}_change", args=[obj.pk])).status_code
            == 200
        )


@pytest.mark.parametrize(
    ("path", "target", "query"),
    [
        ("/admin/agents", "agent", "?status__exact=online"),
        ("/admin/jobs/", "job", "?status__exact=queued"),
        ("/admin/anomalies", "anomaly", "?state=open"),
    ],
)
def test_product_doc_paths_land_on_admin_pages(staff_client, path, target, query):
    response = staff_client.get(path + query, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == reverse(f"admin:fleet_{target}_changelist") + query


def test_license_below_active_agents_needs_the_confirmation_box(staff_client, customer):
    lic = factories.license(customer, max_agents=5)
    for _ in range(3):
        factories.agent(customer)
    url = reverse("admin:fleet_license_change", args=[lic.pk])
    form = {
        "plan": "team",
        "max_agents": 2,
        "max_concurrent_tasks_per_agent": 2,
        "channel": "stable",
        "valid_from_0": lic.valid_from.strftime("%Y-%m-%d"),
        "valid_from_1": "00:00:00",
        "valid_until_0": "",
        "valid_until_1": "",
    }
    response = staff_client.post(url, form)
    assert response.status_code == 200
    assert b"has 3 active agents" in response.content
    assert License.objects.get(pk=lic.pk).max_agents == 5
    response = staff_client.post(url, {**form, "confirm_below_active": "on"})
    assert response.status_code == 302
    assert License.objects.get(pk=lic.pk).max_agents == 2
    event = AuditEvent.objects.get(action="license.update")
    assert (event.actor_user, event.ip_address) == (staff_client.user, "127.0.0.1")
    assert event.changes["max_agents"] == [5, 2]


def test_license_max_agents_must_be_positive(staff_client, customer):
    response = staff_client.post(
        reverse("admin:fleet_license_add"),
        {
            "customer": customer.pk,
            "plan": "team",
            "max_agents": 0,
            "max_concurrent_tasks_per_agent": 1,
            "channel": "stable",
            "valid_from_0": "2026-01-01",
            "valid_from_1": "00:00:00",
        },
    )
    assert response.status_code == 200
    assert b"max_agents must be at least 1" in response.content
    assert not License.objects.exists()


def test_adding_a_license_in_admin_makes_it_current(staff_client, customer):
    old = factories.license(customer, max_agents=3)
    response = staff_client.post(
        reverse("admin:fleet_license_add"),
        {
            "customer": customer.pk,
            "plan": "scale",
            "max_agents": 50,
            "max_concurrent_tasks_per_agent": 4,
            "channel": "beta",
            "valid_from_0": "2026-01-01",
            "valid_from_1": "00:00:00",
        },
    )
    assert response.status_code == 302
    old.refresh_from_db()
    assert not old.is_current
    assert License.objects.get(is_current=True).plan == "scale"


def test_customer_with_members_created_in_admin_is_audited(staff_client, django_user_model):
    member = django_user_model.objects.create_user("ops")
    response = staff_client.post(
        reverse("admin:fleet_customer_add"),
        {
            "name": "Initech",
            "slug": "initech",
            "contact_email": "",
            "notes": "",
            "memberships-TOTAL_FORMS": 1,
            "memberships-INITIAL_FORMS": 0,
            "memberships-0-username": member.username,
            "memberships-0-role": "owner",
            "licenses-TOTAL_FORMS": 0,
            "licenses-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 302, response.content
    assert Membership.objects.get().role == "owner"
    assert set(AuditEvent.objects.values_list("action", flat=True)) == {
        "customer.create",
        "membership.create",
    }


def test_release_published_and_yanked_from_admin(staff_client):
    response = staff_client.post(
        reverse("admin:fleet_release_add"),
        {
            "version": "1.10.0",
            "channel": "stable",
            "notes": "n",
        },
    )
    assert response.status_code == 302
    bad = staff_client.post(
        reverse("admin:fleet_release_add"), {"version": "1.10", "channel": "stable"}
    )
    assert bad.status_code == 200
    assert b"not a semantic version" in bad.content
    release = Release.objects.get()
    staff_client.post(
        reverse("admin:fleet_release_changelist"),
        {
            "action": "yank",
            "_selected_action": [release.pk],
        },
    )
    release.refresh_from_db()
    assert release.yanked
    assert list(AuditEvent.objects.order_by("id").values_list("action", flat=True)) == [
        "release.publish",
        "release.yank",
    ]


def test_staff_revoke_tokens_from_admin(staff_client, customer):
    outstanding = factories.token(customer, expires_at=timezone.now())
    redeemed = factories.token(customer, expires_at=timezone.now(), status="redeemed")
    staff_client.post(
        reverse("admin:fleet_activationtoken_changelist"),
        {
            "action": "revoke",
            "_selected_action": [outstanding.pk, redeemed.pk],
        },
    )
    outstanding.refresh_from_db()
    redeemed.refresh_from_db()
    assert (outstanding.status, redeemed.status) == ("revoked", "redeemed")


def test_agents_filter_by_zone_version_and_status(staff_client, customer):
    factories.agent(customer, factories.host(customer, zone="eu-1"), version="1.9.3", name="alpha")
    factories.agent(
        customer,
        factories.host(customer, zone="us-1"),
        version="1.10.0",
        name="beta",
        status=AgentStatus.OFFLINE,
    )
    url = reverse("admin:fleet_agent_changelist")
    page = staff_client.get(url, {"host__zone": "eu-1"}).content
    assert b"alpha" in page
    assert b">beta<" not in page
    page = staff_client.get(url, {"version": "1.10.0"}).content
    assert b">beta<" in page
    assert b"alpha" not in page
    page = staff_client.get(url, {"status__exact": "offline"}).content
    assert b">beta<" in page
    assert b"alpha" not in page


def test_staff_without_permissions_cannot_act(client, django_user_model, customer):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(*Permission.objects.filter(codename__startswith="view_"))
    client.force_login(viewer)
    token = factories.token(customer, expires_at=timezone.now())
    url = reverse("admin:fleet_activationtoken_changelist")
    page = client.get(url)
    assert page.status_code == 200
    assert b"Revoke outstanding tokens" not in page.content
    client.post(url, {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.status == "outstanding"
    assert client.get(reverse("admin:fleet_release_add")).status_code == 403


@pytest.mark.parametrize("model", ["customer", "license", "release"])
def test_history_is_never_deleted_from_admin(staff_client, customer, model):
    factories.license(customer)
    factories.release("1.0.0")
    obj = {"customer": Customer, "license": License, "release": Release}[model].objects.first()
    assert (
        staff_client.get(reverse(f"admin:fleet_{model}_delete", args=[obj.pk])).status_code == 403
    )
    page = staff_client.get(reverse(f"admin:fleet_{model}_changelist")).content
    assert b"delete_selected" not in page


def test_saving_an_unchanged_license_records_nothing(staff_client, customer):
    lic = factories.license(customer, max_agents=5)
    page = staff_client.get(reverse("admin:fleet_license_change", args=[lic.pk]))
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields}
    posted = {
        **{
            k: v
            for k, v in data.items()
            if v is not None and k not in ("valid_from", "valid_until")
        },
        "valid_from_0": lic.valid_from.strftime("%Y-%m-%d"),
        "valid_from_1": lic.valid_from.strftime("%H:%M:%S"),
        "valid_until_0": "",
        "valid_until_1": "",
    }
    assert (
        staff_client.post(reverse("admin:fleet_license_change", args=[lic.pk]), posted).status_code
        == 302
    )
    assert not AuditEvent.objects.filter(action="license.update").exists()


def test_a_license_already_below_its_fleet_can_be_raised_without_confirmation(customer):
    from fleet.services.licenses import license_update

    lic = factories.license(customer, max_agents=1)
    for _ in range(3):
        factories.agent(customer)
    lic.max_agents = 2  # still below the 3 active agents, but going up
    license_update(license=lic, actor=SYSTEM)
    assert License.objects.get(pk=lic.pk).max_agents == 2


def test_customer_page_queries_do_not_grow_with_members(staff_client, customer, django_user_model):
    from fleet.services.customers import membership_set

    url = reverse("admin:fleet_customer_change", args=[customer.pk])

    def add_members(n: int) -> None:
        start = customer.memberships.count()
        for i in range(start, start + n):
            membership_set(
                customer=customer,
                user=django_user_model.objects.create_user(f"m{i}"),
                role="viewer",
                actor=SYSTEM,
            )

    add_members(2)
    few = _count(staff_client, url)
    add_members(10)
    many = _count(staff_client, url)
    assert many == few
    assert b"m11" in staff_client.get(url).content


def test_unknown_member_username_is_a_form_error(staff_client):
    response = staff_client.post(
        reverse("admin:fleet_customer_add"),
        {
            "name": "Initech",
            "slug": "initech",
            "contact_email": "",
            "notes": "",
            "memberships-TOTAL_FORMS": 1,
            "memberships-INITIAL_FORMS": 0,
            "memberships-0-username": "nobody",
            "memberships-0-role": "owner",
            "licenses-TOTAL_FORMS": 0,
            "licenses-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 200
    assert b"No user" in response.content
    assert not Customer.objects.exists()


def test_agents_jobs_and_anomalies_pages_show_the_four_numbers(
    staff_client, customer, other_customer
):
    factories.license(customer)
    factories.agent(customer)
    factories.agent(
        other_customer, last_heartbeat_at=timezone.now() - timezone.timedelta(minutes=9)
    )
    before = staff_client.get(reverse("admin:fleet_agent_changelist"))
    assert before.context["fleet_numbers"] is None  # no snapshot yet: no box
    assert b"Online ratio" not in before.content
    fleet_snapshots_take()
    factories.agent(customer)  # after the snapshot: the box says so at the next minute
    for model in ("agent", "job", "anomaly"):
        everyone = staff_client.get(reverse(f"admin:fleet_{model}_changelist"))
        assert everyone.context["fleet_numbers"].agents_active == 2
        assert b"every fleet" in everyone.content
        assert b"50%" in everyone.content  # online ratio, fleet-wide
        assert b"As the minute snapshot of" in everyone.content
    one = staff_client.get(
        reverse("admin:fleet_agent_changelist"), {"customer__id__exact": customer.pk}
    )
    assert one.context["fleet_numbers"].online_ratio == 1.0
    assert customer.name.encode() in one.content


def test_staff_resolve_and_reopen_anomalies_with_a_note(staff_client, customer):
    from fleet.services.anomalies import anomaly_open

    anomaly = anomaly_open(
        customer=customer, kind="agent_reported", fingerprint="f", message="disk full", actor=SYSTEM
    )
    url = reverse("admin:fleet_anomaly_changelist")
    ask = staff_client.post(url, {"action": "resolve", "_selected_action": [anomaly.pk]})
    assert ask.status_code == 200 and b"disk full" in ask.content  # the note form
    empty = staff_client.post(
        url, {"action": "resolve", "_selected_action": [anomaly.pk], "apply": "1"}
    )
    assert empty.status_code == 200  # a note is required
    done = staff_client.post(
        url,
        {
            "action": "resolve",
            "_selected_action": [anomaly.pk],
            "apply": "1",
            "note": "cleaned /tmp",
        },
    )
    assert done.status_code == 302
    anomaly.refresh_from_db()
    assert (anomaly.resolution_note, anomaly.resolved_by) == ("cleaned /tmp", staff_client.user)
    staff_client.post(
        url,
        {"action": "reopen", "_selected_action": [anomaly.pk], "apply": "1", "note": "came back"},
    )
    anomaly.refresh_from_db()
    assert anomaly.resolved_at is None
    notes = list(
        AuditEvent.objects.filter(target_type="fleet.anomaly")
        .order_by("id")
        .values_list("action", "changes")
    )
    assert notes[-2:] == [
        ("anomaly.resolve", {"note": [None, "cleaned /tmp"]}),
        ("anomaly.reopen", {"note": [None, "came back"]}),
    ]
    assert AuditEvent.objects.get(action="anomaly.reopen").actor_user == staff_client.user


def test_reopening_never_makes_two_open_rows_of_one_fingerprint(customer):
    from fleet.services.anomalies import anomalies_reopen, anomalies_resolve, anomaly_open

    first = anomaly_open(
        customer=customer, kind="agent_reported", fingerprint="f", message="m", actor=SYSTEM
    )
    anomalies_resolve(where=Q(pk=first.pk), note="fixed", actor=SYSTEM)
    second = anomaly_open(
        customer=customer, kind="agent_reported", fingerprint="f", message="m", actor=SYSTEM
    )
    assert second.pk != first.pk
    assert anomalies_reopen(ids=[first.pk], note="no", actor=SYSTEM) == 0
    assert Anomaly.objects.filter(resolved_at__isnull=True).count() == 1


def _wave_fleet(customer, n=6):
    factories.license(customer)
    factories.release("1.10.0")
    hosts = [factories.host(customer, zone=z) for z in ("a", "b")]
    return [
        factories.agent(
            customer, hosts[i % 2], version="1.9.3", role=("coder", "reviewer", "tester")[i % 3]
        )
        for i in range(n)
    ]


def test_staff_start_watch_and_steer_a_rollout(staff_client, customer):
    _wave_fleet(customer)
    release = Release.objects.get(version="1.10.0")
    form = {
        "customer": customer.pk,
        "release": release.pk,
        "canary_agent": "",
        "canary_soak": "24:00:00",
        "batch_fraction": "0.25",
        "batch_watch": "01:00:00",
        "agent_deadline": "00:30:00",
        "throughput_drop_tolerance": "0.20",
        "online_ratio_floor": "0.95",
        "reason": "monthly",
    }
    refused = staff_client.post(reverse("admin:fleet_rollout_add"), {**form, "batch_fraction": "1"})
    assert refused.status_code == 200
    assert b"whole fleet at once is refused" in refused.content
    assert staff_client.post(reverse("admin:fleet_rollout_add"), form).status_code == 302
    rollout = Rollout.objects.get()
    page = staff_client.get(reverse("admin:fleet_rollout_change", args=[rollout.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "canary ◀" in html and "batch 1" in html and "<progress" in html
    listing = staff_client.get(reverse("admin:fleet_rollout_changelist")).content.decode()
    assert "0/6" in listing
    url = reverse("admin:fleet_rollout_changelist")
    staff_client.post(
        url,
        {
            "action": "pause",
            "_selected_action": [rollout.pk],
            "apply": "1",
            "note": "waiting for the release notes",
        },
    )
    rollout.refresh_from_db()
    assert rollout.state == "paused"
    assert "waiting for the release notes" in rollout.paused_reason
    staff_client.post(
        url,
        {
            "action": "resume",
            "_selected_action": [rollout.pk],
            "apply": "1",
            "note": "notes are out",
        },
    )
    rollout.refresh_from_db()
    assert rollout.state == "canary"
    actions = list(
        AuditEvent.objects.filter(target_type="fleet.rollout")
        .order_by("id")
        .values_list("action", "actor_user")
    )
    assert actions == [
        ("rollout.start", staff_client.user.pk),
        ("rollout.pause", staff_client.user.pk),
        ("rollout.resume", staff_client.user.pk),
    ]


def test_the_staff_index_says_whether_beat_and_the_workers_run(staff_client):
    from fleet import tasks

    page = staff_client.get("/admin/").content.decode()
    assert "Control Plane: degraded" in page
    assert "beat and the workers have never run the stale sweep" in page
    tasks.mark_stale_agents()
    page = staff_client.get("/admin/").content.decode()
    assert "stale sweep last ran 0 s ago" in page
