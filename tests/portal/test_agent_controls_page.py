"""Pause, drain and resume on an agent's page: owners and admins act (with a reason), viewers
see the controls disabled saying whom to ask and are refused by the server."""

import pytest
from django.urls import reverse
from django.utils import timezone

from fleet.choices import AgentStatus, AuditAction
from fleet.models import Agent, AuditEvent
from fleet.services.agent_controls import agent_pause
from fleet.services.audit import SYSTEM
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent(customer):
    factories.license(customer, max_agents=10)
    return factories.agent(customer, name="coder-1", last_heartbeat_at=timezone.now())


def test_an_owner_pauses_with_a_reason_and_resumes(owner, agent):
    page = owner.get(reverse("portal:agent_detail", args=[agent.pk])).content.decode()
    assert f'action="/portal/agents/{agent.pk}/pause/"' in page
    response = owner.post(
        reverse("portal:agent_pause", args=[agent.pk]),
        {"reason": "kernel update", "timeout_minutes": "90"},
        follow=True,
    )
    page = response.content.decode()
    assert "coder-1 is paused" in page and "kernel update" in page and "resumes by itself" in page
    agent.refresh_from_db()
    assert agent.status == AgentStatus.PAUSED and agent.paused_until is not None
    assert AuditEvent.objects.get(action=AuditAction.AGENT_PAUSE).actor_user == owner.user
    response = owner.post(reverse("portal:agent_resume", args=[agent.pk]), follow=True)
    assert "coder-1 is resumed" in response.content.decode()
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.ONLINE


def test_a_pause_without_a_reason_changes_nothing(owner, agent):
    response = owner.post(
        reverse("portal:agent_pause", args=[agent.pk]), {"reason": ""}, follow=True
    )
    assert "Say why you pause the agent" in response.content.decode()
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.ONLINE


def test_drain_on_the_page(owner, customer, agent):
    factories.job(customer, role="coder", status="running", agent=agent)
    response = owner.post(
        reverse("portal:agent_pause", args=[agent.pk]), {"reason": "r", "drain": "on"}, follow=True
    )
    assert "coder-1 is draining" in response.content.decode()
    assert "Draining: it finishes its 1 running job" in response.content.decode()


def test_a_viewer_sees_disabled_controls_and_is_refused(viewer, agent):
    page = viewer.get(reverse("portal:agent_detail", args=[agent.pk])).content.decode()
    assert "ask an owner" in page
    assert f'action="/portal/agents/{agent.pk}/pause/"' not in page
    response = viewer.post(reverse("portal:agent_pause", args=[agent.pk]), {"reason": "r"})
    assert response.status_code == 403
    agent_pause(agent=agent, reason="r", actor=SYSTEM)
    page = viewer.get(reverse("portal:agent_detail", args=[agent.pk])).content.decode()
    assert "Owners and admins resume agents: ask an owner" in page
    assert viewer.post(reverse("portal:agent_resume", args=[agent.pk])).status_code == 403
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.PAUSED


def test_another_customers_agent_is_a_404(owner, other_customer):
    factories.license(other_customer)
    theirs = factories.agent(other_customer)
    for name in ("agent_pause", "agent_resume"):
        response = owner.post(reverse(f"portal:{name}", args=[theirs.pk]), {"reason": "r"})
        assert response.status_code == 404
    assert Agent.objects.get(pk=theirs.pk).status == AgentStatus.ONLINE


def test_a_running_job_is_told_to_stop_from_its_page(owner, customer, agent):
    job = factories.job(customer, status="running", agent=agent, started_at=timezone.now())
    detail = reverse("portal:job_detail", args=[job.pk])
    assert (
        f'action="{reverse("portal:job_cancel", args=[job.pk])}"'
        in owner.get(detail).content.decode()
    )
    response = owner.post(
        reverse("portal:job_cancel", args=[job.pk]), {"next": detail}, follow=True
    )
    page = response.content.decode()
    assert "is told to stop: its agent stops it at its next heartbeat" in page
    assert "Told to stop" in page and "coder-1 learns it from its next heartbeat" in page
    assert f'action="{reverse("portal:job_cancel", args=[job.pk])}"' not in page  # once


def test_an_owner_mints_an_ephemeral_token(owner, customer, agent):
    response = owner.post(
        reverse("portal:tokens"), {"count": 1, "expires_in_days": 7, "ephemeral": "on"}
    )
    assert response.status_code == 200
    from fleet.models import ActivationToken

    assert ActivationToken.objects.get().ephemeral
    page = owner.get(reverse("portal:tokens")).content.decode()
    assert "ephemeral</span>" in page and "retired after its first job" in page
