"""Usage on complete and fail: stored as reported, summed exactly (Decimal), and hostile
numbers refused with 422 naming the field, nothing stored."""

from decimal import Decimal

import pytest

from fleet.choices import JobStatus
from fleet.models import Job
from fleet.services.usage import usage_totals
from tests import factories
from tests.fleet.api.test_hostile_bodies import raw_post

pytestmark = pytest.mark.django_db


@pytest.fixture
def running(agent, licensed):
    factories.job(licensed, role="coder")
    claimed = agent.api.post("/jobs/claim").json()
    return claimed["id"], claimed["lease_id"]


USAGE = [
    # 0.1 + 0.2 in floats is 0.30000000000000004: the sums are Decimal, from the digits sent.
    {"model": "claude-sonnet", "provider": "anthropic", "input_tokens": 120_000,
     "output_tokens": 8_000, "cost_usd": 0.1},
    {"model": "gpt-mini", "provider": "openai", "input_tokens": 3, "output_tokens": 999_999_999_999,
     "cost_usd": 0.2},
    {"model": "local", "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0000015},
]  # fmt: skip


def test_complete_stores_the_usage_and_its_exact_sums(agent, running):
    job_id, lease = running
    body = {"lease_id": lease, "result": {"ok": 1}, "usage": USAGE, "wall_seconds": 61.5}
    response = agent.api.post(f"/jobs/{job_id}/complete", body)
    assert response.status_code == 200, response.content
    job = Job.objects.get(pk=job_id)
    # By hand: 120000 + 3 + 0; 8000 + 999999999999 + 0; 0.1 + 0.2 + 0.000002 (rounded half up).
    assert (job.input_tokens, job.output_tokens) == (120_003, 1_000_000_007_999)
    assert job.cost_usd == Decimal("0.300002")
    assert job.wall_seconds == 61.5
    assert [item["model"] for item in job.usage] == ["claude-sonnet", "gpt-mini", "local"]
    assert job.usage[2]["cost_usd"] == "0.000002"
    assert response.json()["cost_usd"] == "0.300002"
    # The same sums from the one function, and a repeat changes nothing.
    assert usage_totals(job.usage).cost_usd == Decimal("0.300002")
    again = agent.api.post(f"/jobs/{job_id}/complete", {**body, "usage": []})
    assert again.status_code == 200
    assert Job.objects.get(pk=job_id).cost_usd == Decimal("0.300002")


def test_fail_stores_usage_too(agent, running):
    job_id, lease = running
    usage = [{"model": "m", "input_tokens": 5, "output_tokens": 7, "cost_usd": 2}]
    response = agent.api.post(f"/jobs/{job_id}/fail", {"lease_id": lease, "usage": usage})
    assert response.status_code == 200, response.content
    job = Job.objects.get(pk=job_id)
    assert (job.status, job.input_tokens, job.output_tokens) == (JobStatus.FAILED, 5, 7)
    assert job.cost_usd == Decimal("2")


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"input_tokens": -1}, "usage.0.input_tokens"),
        ({"output_tokens": 10**13}, "usage.0.output_tokens"),
        ({"input_tokens": "12"}, "usage.0.input_tokens"),
        ({"input_tokens": True}, "usage.0.input_tokens"),
        ({"input_tokens": 1.5}, "usage.0.input_tokens"),
        ({"cost_usd": "NaN"}, "usage.0.cost_usd"),
        ({"cost_usd": "1.5"}, "usage.0.cost_usd"),
        ({"cost_usd": 1e30}, "usage.0.cost_usd"),
        ({"cost_usd": -0.01}, "usage.0.cost_usd"),
        ({"cost_usd": None}, "usage.0.cost_usd"),
        ({"model": "m\x00"}, "usage.0.model"),
        ({"model": "x" * 101}, "usage.0.model"),
        ({"surprise": 1}, "usage.0.surprise"),
    ],
)
def test_hostile_usage_is_refused_naming_the_field(agent, running, item, field):
    job_id, lease = running
    usage = [{"model": "m", "input_tokens": 1, "output_tokens": 1, "cost_usd": 1, **item}]
    response = agent.api.post(f"/jobs/{job_id}/complete", {"lease_id": lease, "usage": usage})
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["code"] == "invalid_input"
    assert [error["field"] for error in body["errors"]] == [field]
    job = Job.objects.get(pk=job_id)
    assert (job.status, job.usage, job.cost_usd) == (JobStatus.RUNNING, [], 0)


def test_non_finite_literals_too_many_items_and_wall_seconds(agent, running):
    job_id, lease = running
    raw = f'{{"lease_id": "{lease}", "usage": [{{"model": "m", "cost_usd": NaN}}]}}'
    assert raw_post(agent.api, f"/jobs/{job_id}/complete", raw).status_code == 422
    many = [{"model": "m"}] * 21
    for body, field in (
        ({"usage": many}, "usage"),
        ({"wall_seconds": 1e30}, "wall_seconds"),
        ({"wall_seconds": -1}, "wall_seconds"),
    ):
        response = agent.api.post(f"/jobs/{job_id}/fail", {"lease_id": lease, **body})
        assert response.status_code == 422, response.content
        assert [error["field"] for error in response.json()["errors"]] == [field]
    assert Job.objects.get(pk=job_id).status == JobStatus.RUNNING
