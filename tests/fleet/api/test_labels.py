"""Labels and routing: agents carry key=value labels (from their token, their activation,
operators), jobs may require labels, a claim hands an agent only jobs whose required labels
it has, and `jobs_pending` counts only what it could claim. Hostile labels are a 422
naming the field."""

import pytest
from django.test import Client

from fleet.choices import AuditAction
from fleet.models import Agent, AuditEvent, Job
from fleet.services.audit import SYSTEM
from fleet.services.tokens import token_mint
from tests import factories
from tests.fleet.api.conftest import ApiClient, activate, activation_body, beat

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _counts_at_once(settings, monkeypatch):
    settings.AGENT_CACHE_POLL_SECONDS = 0
    monkeypatch.setattr("fleet.agent_cache.QUEUED_COUNT_EVERY", 0)


def submit(key_api, **required):
    response = key_api.post(
        "/jobs",
        {"role": "coder", "payload": {"repo": "a/b", "task": "t"}, "required_labels": required},
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_a_claim_hands_only_jobs_whose_labels_the_agent_has(key_api, licensed):
    gpu = activate(licensed, labels={"gpu": "a100", "os": "linux"})
    plain = activate(licensed, machine_id="m-2")
    needs_gpu = submit(key_api, gpu="a100")
    needs_h100 = submit(key_api, gpu="h100")
    assert beat(plain).json()["jobs_pending"] == 0  # two queued, neither for it
    assert beat(gpu).json()["jobs_pending"] == 1  # the a100 one only
    assert plain.api.post("/jobs/claim").status_code == 204
    anyone = submit(key_api)
    assert beat(plain).json()["jobs_pending"] == 1
    assert plain.api.post("/jobs/claim").json()["id"] == anyone
    assert gpu.api.post("/jobs/claim").json()["id"] == needs_gpu
    assert gpu.api.post("/jobs/claim").status_code == 204  # h100 is not what it has
    assert Job.objects.get(pk=needs_h100).status == "queued"


def test_token_labels_reach_every_agent_and_win_over_reported_ones(key_api, licensed):
    tokens = key_api.post("/tokens", {"count": 1, "labels": {"pool": "ci", "os": "linux"}})
    token = tokens.json()["tokens"][0]
    assert token["details"]["labels"] == {"os": "linux", "pool": "ci"}
    api = ApiClient(Client())
    body = activation_body(token["token"], labels={"os": "windows", "gpu": "a100"})
    agent_id = api.post("/agents/activate", body).json()["agent_id"]
    assert Agent.objects.get(pk=agent_id).labels == {"gpu": "a100", "os": "linux", "pool": "ci"}


def test_operators_edit_labels_and_routing_follows(key_api, licensed):
    agent = activate(licensed)
    job = submit(key_api, gpu="a100")
    assert agent.api.post("/jobs/claim").status_code == 204
    response = key_api.put(f"/agents/{agent.agent.pk}/labels", {"labels": {"gpu": "a100"}})
    assert (response.status_code, response.json()["labels"]) == (200, {"gpu": "a100"})
    assert beat(agent).json()["jobs_pending"] == 1
    assert agent.api.post("/jobs/claim").json()["id"] == job
    event = AuditEvent.objects.get(action=AuditAction.AGENT_LABELS)
    assert event.changes == {"labels": [None, "gpu=a100"]}


def test_another_customers_agent_is_a_404_and_no_key_a_401(key_api, anon, other_customer):
    factories.license(other_customer)
    theirs = factories.agent(other_customer)
    response = key_api.put(f"/agents/{theirs.pk}/labels", {"labels": {"a": "b"}})
    missing = key_api.put("/agents/999999/labels", {"labels": {"a": "b"}})
    assert response.status_code == missing.status_code == 404
    assert response.json() == missing.json()
    assert anon.put(f"/agents/{theirs.pk}/labels", {"labels": {}}).status_code == 401
    assert Agent.objects.get(pk=theirs.pk).labels == {}


HOSTILE = [
    {"has space": "x"},
    {"gpu": "a 100"},
    {"nul\x00": "x"},
    {"gpu": "a\x00"},
    {f"k{n}": "v" for n in range(10_000)},
    {"-leading": "x"},
    {"k" * 64: "x"},
    {"gpu": 100},
    ["gpu=a100"],
]


@pytest.mark.parametrize("labels", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_labels_are_a_422_naming_the_field(key_api, licensed, labels):
    agent = activate(licensed)
    answers = {
        "labels": key_api.put(f"/agents/{agent.agent.pk}/labels", {"labels": labels}),
        "required_labels": key_api.post(
            "/jobs",
            {"role": "coder", "payload": {"repo": "a/b", "task": "t"}, "required_labels": labels},
        ),
    }
    _, token = token_mint(customer=licensed, actor=SYSTEM)
    answers["labels "] = ApiClient(agent.api.client).post(
        "/agents/activate", activation_body(token, machine_id="m-9", labels=labels)
    )
    answers["labels  "] = key_api.post("/tokens", {"count": 1, "labels": labels})
    for field, response in answers.items():
        assert response.status_code == 422, (field, response.content[:300])
        fields = [e["field"].split(".")[0] for e in response.json()["errors"]]
        assert field.strip() in fields, (field, response.json())
    assert Agent.objects.get(pk=agent.agent.pk).labels == {}
    assert not Job.objects.exists()


def test_agents_and_jobs_filter_by_label_on_the_portal(client, licensed, django_user_model):
    from django.urls import reverse

    from fleet.choices import MemberRole
    from tests.portal.conftest import member_client

    owner = member_client(licensed, django_user_model, MemberRole.OWNER, "olga")
    factories.agent(licensed, name="gpu-box", labels={"gpu": "a100"})
    factories.agent(licensed, name="plain-box")
    factories.job(licensed, required_labels={"gpu": "a100"}, payload={"task": "train"})
    factories.job(licensed, payload={"task": "lint"})
    page = owner.get(reverse("portal:agents"), {"label": "gpu=a100"}).content.decode()
    assert "gpu-box" in page and "plain-box" not in page
    page = owner.get(reverse("portal:agents"), {"label": "gpu"}).content.decode()
    assert "gpu-box" in page and "plain-box" not in page
    page = owner.get(reverse("portal:agents"), {"label": "bad label"}).content.decode()
    assert "gpu-box" not in page
    page = owner.get(reverse("portal:jobs"), {"label": "gpu=a100"}).content.decode()
    assert "train" in page and "lint" not in page
