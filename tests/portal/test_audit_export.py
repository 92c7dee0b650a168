"""Taking the activity away: owners and admins download the Activity page's events (its
filters and a date range kept) as CSV or JSON Lines, streamed in batches so a year of a
busy fleet downloads in the memory of one batch; viewers are refused by the server; staff
download any customer's events from the admin."""

import contextlib
import csv
import ctypes
import gc
import io
import itertools
import json
import os
import re
import time
import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from fleet.choices import AuditAction, MemberRole
from fleet.models import AuditEvent
from fleet.selectors import audit_export as audit_export_module
from tests import factories
from tests.portal.conftest import member_client

pytestmark = pytest.mark.django_db

ACTIVITY = reverse("portal:activity")
EXPORT = reverse("portal:activity_export")


def event(customer, at: datetime, action=AuditAction.JOB_SUBMIT, **fields) -> AuditEvent:
    """An audit row at exactly `at` (the column is auto_now_add: set it afterwards)."""
    created = factories.audit_event(customer, action=action, **fields)
    AuditEvent.objects.filter(pk=created.pk).update(at=at)
    return created


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def download(client, **params: str) -> tuple[object, str]:
    response = client.get(EXPORT, params)
    assert response.status_code == 200, response.content
    assert response.streaming
    return response, b"".join(response.streaming_content).decode()


@pytest.fixture
def quiet(customer):
    """The customer with no event yet (its members' additions left out)."""
    AuditEvent.objects.filter(customer=customer).delete()
    return customer


@pytest.fixture
def log(owner, quiet, other_customer):
    customer = quiet
    own = {
        "cancel": event(
            customer,
            moment("2025-04-01T09:00:00"),
            AuditAction.JOB_CANCEL,
            actor_user=owner.user,
            actor_label="olga",
            target_id="42",
            changes={"status": ["queued", "cancelled"]},
            ip_address="198.51.100.7",
        ),
        "claim": event(
            customer, moment("2025-04-01T09:05:00"), AuditAction.JOB_CLAIM, actor_label="agent:c-1"
        ),
        "mint": event(
            customer, moment("2025-04-03T12:00:00"), AuditAction.TOKEN_MINT, actor_label="=cmd|x"
        ),
    }
    for n in range(3):
        event(other_customer, moment(f"2025-04-01T09:0{n}:00"), actor_label="intruder")
    return own


def test_an_owner_downloads_the_pages_events_as_csv(owner, log, customer):
    response, body = download(owner, format="csv")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert "no-store" in response["Cache-Control"]
    filename = re.fullmatch(
        r'attachment; filename="(agentina-activity-[^"]+\.csv)"', response["Content-Disposition"]
    )
    assert filename
    assert re.fullmatch(
        rf"agentina-activity-{customer.slug}-2025-04-01-\d{{8}}T\d{{6}}Z\.csv", filename[1]
    )
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    # The page's default: machine events hidden; oldest first; nobody else's.
    assert [int(r["id"]) for r in rows] == [log["cancel"].pk, log["mint"].pk]
    assert "intruder" not in body
    cancel = rows[0]
    assert (cancel["time"], cancel["actor"], cancel["actor_kind"]) == (
        "2025-04-01T09:00:00.000000Z",
        "olga",
        "user",
    )
    assert (cancel["action"], cancel["action_words"]) == ("job.cancel", "Job cancelled")
    assert json.loads(cancel["changes"]) == {"status": ["queued", "cancelled"]}
    assert cancel["address"] == "198.51.100.7"
    assert rows[1]["actor"] == "'=cmd|x"  # a formula, neutralised


def test_the_download_keeps_the_filters_and_the_range(owner, log):
    def ids(**params):
        _, body = download(owner, format="jsonl", **params)
        return [json.loads(line)["id"] for line in body.splitlines()]

    assert ids(machine="1") == [log["cancel"].pk, log["claim"].pk, log["mint"].pk]
    assert ids(actor="agent", machine="1") == [log["claim"].pk]
    assert ids(action="token.mint") == [log["mint"].pk]
    assert ids(since="2025-04-02") == [log["mint"].pk]
    assert ids(until="2025-04-01", machine="1") == [log["cancel"].pk, log["claim"].pk]
    assert ids(since="2025-04-01T09:00:00.000001Z", until="2025-04-03T12:00:00Z") == []
    response, _ = download(owner, format="jsonl", since="2025-04-01", until="2025-04-30")
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert (
        response["Content-Disposition"].endswith('-2025-04-01-2025-04-30.jsonl"')
        and "agentina-activity-" in response["Content-Disposition"]
    )


def test_jsonl_lines_are_each_valid_json_with_the_recorded_values(owner, log):
    _, body = download(owner, format="jsonl", machine="1")
    assert body.endswith("\n")
    records = [json.loads(line) for line in body.splitlines()]
    assert [r["actor"] for r in records] == ["olga", "agent:c-1", "=cmd|x"]
    assert records[0]["changes"] == {"status": ["queued", "cancelled"]}
    assert records[1]["address"] is None and records[1]["target_label"] == "job 1"


def test_the_activity_page_offers_the_download_with_its_filters(owner, log):
    html = owner.get(ACTIVITY, {"actor": "user", "since": "2025-04-01"}).content.decode()
    form = html[html.index(f'action="{EXPORT}"') :]
    form = form[: form.index("</form>")]
    assert '<input type="hidden" name="actor" value="user">' in form
    assert '<input type="hidden" name="since" value="2025-04-01">' in form
    assert '<button class="small" name="format" value="csv">Download CSV</button>' in form
    assert '<button class="small" name="format" value="jsonl">Download JSON Lines</button>' in form
    assert "disabled" not in form
    # The range narrows the page too, so it shows what the file will hold.
    assert "olga cancelled" in html
    assert "olga cancelled" not in owner.get(ACTIVITY, {"since": "2025-04-02"}).content.decode()


def test_an_admin_may_download(customer, log, django_user_model):
    admin = member_client(customer, django_user_model, MemberRole.ADMIN, "adam")
    _, body = download(admin, format="csv")
    assert "olga" in body


def test_a_viewer_is_refused_by_the_server_and_shown_whom_to_ask(viewer, log, customer):
    response = viewer.get(EXPORT, {"format": "csv"})
    assert response.status_code == 403
    assert not response.streaming
    page = response.content.decode()
    assert "This takes an owner or an admin of" in page
    assert "olga" not in page and "198.51.100.7" not in page
    html = viewer.get(ACTIVITY).content.decode()
    assert '<p class="ask-owner" id="export-ask">Owners and admins download the activity' in html
    assert f"ask an owner of {customer.name}.</p>" in html
    assert '<fieldset class="inline-form" disabled aria-describedby="export-ask">' in html


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"format": "csv", "since": "2025-04-02", "until": "2025-04-01"}, "“To” must be after"),
        ({"format": "csv", "since": "2025-02-30"}, "“From” must be a date (2025-03-31)"),
        ({"format": "csv", "until": "soon"}, "“To” must be a date"),
        ({"format": "csv", "since": "2025-04-01\x00"}, "“From” must not contain NUL bytes"),
        ({"format": "csv", "since": "9" * 100}, "“From” must be at most 40 characters"),
        ({"format": "xlsx"}, "Choose CSV or JSON Lines to download."),
        ({}, "Choose CSV or JSON Lines to download."),
    ],
)
def test_bad_input_shows_the_page_again_with_the_reason(owner, log, params, message):
    response = owner.get(EXPORT, params)
    assert response.status_code == 422
    assert not response.streaming
    html = response.content.decode()
    assert '<p class="error" role="alert">' in html
    assert message in html
    assert "\x00" not in html


def test_a_bad_range_on_the_page_itself_is_a_422_with_the_reason(owner, log):
    response = owner.get(ACTIVITY, {"since": "2025-04-02", "until": "2025-04-01"})
    assert response.status_code == 422
    html = response.content.decode()
    assert "“To” must be after the start of the range." in html
    assert f'action="{EXPORT}"' not in html  # nothing to download until it is fixed


def test_ties_in_time_are_read_once_each_across_batches(owner, quiet, monkeypatch):
    """Keyset batches on (time, id): rows sharing a moment straddle a batch's end and are
    still each read exactly once."""
    monkeypatch.setattr(audit_export_module, "EXPORT_BATCH", 2)
    same = moment("2025-04-01T00:00:00")
    ids = [event(quiet, same).pk for _ in range(5)] + [event(quiet, same + timedelta(1)).pk]
    _, body = download(owner, format="jsonl")
    assert [json.loads(line)["id"] for line in body.splitlines()] == ids


def test_staff_download_any_customers_filtered_events_from_the_admin(
    staff_client, log, customer, other_customer
):
    url = reverse("admin:fleet_auditevent_changelist") + f"?customer__id__exact={customer.pk}"
    response = staff_client.post(
        url,
        {
            "action": "export_csv",
            "select_across": "1",
            "index": "0",
            "_selected_action": [str(log["cancel"].pk)],
        },
    )
    assert response.status_code == 200
    assert response.streaming
    assert f"agentina-activity-{customer.slug}-2025-04-01-" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    # Staff see machine events too: every event the changelist's filters match.
    assert [int(r["id"]) for r in rows] == [log["cancel"].pk, log["claim"].pk, log["mint"].pk]
    assert rows[2]["actor"] == "'=cmd|x"
    jsonl = staff_client.post(
        reverse("admin:fleet_auditevent_changelist"),
        {"action": "export_jsonl", "index": "0", "_selected_action": [str(log["claim"].pk)]},
    )
    lines = b"".join(jsonl.streaming_content).decode().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [log["claim"].pk]


# --- a year of a busy fleet ---------------------------------------------------------------

ROWS = 100_000


@pytest.fixture
def year_of_events(quiet, monkeypatch):
    """100,000 events five minutes apart (auto_now_add stamps each as bulk_create saves
    it: a clock that ticks per call spreads them), the size of real ones (a pause with its
    reason, a gate's numbers); then the statistics autovacuum would gather, so the planner
    sees the table as production would."""
    start = moment("2025-01-01T00:00:00")
    ticks = itertools.count()
    monkeypatch.setattr(
        "django.utils.timezone.now", lambda: start + timedelta(minutes=5 * next(ticks))
    )
    AuditEvent.objects.bulk_create(
        (
            AuditEvent(
                customer=quiet,
                action=AuditAction.AGENT_PAUSE if n % 3 else AuditAction.ROLLOUT_PAUSE,
                actor_label=f"api-key:nightly-pipeline-{n % 7}",
                target_type="fleet.agent",
                target_id=str(n),
                target_repr=f"coder-{n} on build-host-{n % 97}.eu-west-1a.internal",
                changes={
                    "status": ["online", "paused"],
                    "reason": "host maintenance window: kernel upgrade and reboot",
                    "gate": {"online_ratio": 0.97, "floor": 0.95, "throughput_drop": 0.12},
                },
                ip_address=f"10.0.{n % 256}.{n % 200}",
            )
            for n in range(ROWS)
        ),
        batch_size=5000,
    )
    monkeypatch.undo()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE fleet_auditevent")
    return quiet


class PeakMemory:
    """The most memory the process held above where it started, sampled at each chunk.
    Resident memory from /proc (no overhead: 100,000 rows under tracemalloc take many
    times longer), after freed memory is handed back so that new allocations show;
    tracemalloc's peak where /proc is missing."""

    def __init__(self) -> None:
        self.rss = os.path.exists("/proc/self/statm")
        self.peak = 0

    def _resident(self) -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.rss:
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc: return the freed heap
            self.start = self._resident()
        else:
            tracemalloc.start()
        return self

    def sample(self) -> None:
        if self.rss:
            self.peak = max(self.peak, self._resident() - self.start)

    def __exit__(self, *exc: object) -> None:
        if not self.rss:
            self.peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()


def test_100000_events_stream_in_bounded_memory_and_few_queries(owner, year_of_events):
    for fmt, header in (("csv", 1), ("jsonl", 0)):
        started = time.perf_counter()
        response = owner.get(EXPORT, {"format": fmt})
        assert response.status_code == 200 and response.streaming
        size = lines = 0
        with PeakMemory() as memory, CaptureQueriesContext(connection) as queries:
            for chunk in response.streaming_content:
                memory.sample()
                size += len(chunk)
                lines += chunk.count(b"\n")
        seconds = time.perf_counter() - started
        print(
            f"\n{fmt}: {ROWS:,} events, {size / 2**20:.1f} MiB in {seconds:.1f} s, "
            f"peak growth {memory.peak / 2**20:.1f} MiB, {len(queries)} queries"
        )
        assert lines == ROWS + header  # (a header, then) one line an event
        assert size > 30 * 2**20  # the whole file is over 30 MiB ...
        assert memory.peak < 16 * 2**20  # ... but no more than a batch's worth is held
        assert len(queries) <= ROWS // audit_export_module.EXPORT_BATCH + 3  # batches, not rows
