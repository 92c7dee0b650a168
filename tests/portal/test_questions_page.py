"""The Questions page: every member sees what agents wait on; owners and admins answer
(htmx swaps the answered row in); another customer's question is a 404."""

import pytest

from fleet.choices import AgentActivity, AuditAction
from fleet.models import AuditEvent, Question
from fleet.services.questions import question_ask
from tests import factories
from tests.portal.conftest import member_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def asked(customer):
    factories.license(customer, max_agents=5)
    agent = factories.agent(customer)
    job = factories.job(customer, role="coder", status="running", agent=agent)
    question, _ = question_ask(agent=agent, job_id=job.pk, text="Ship it?", options=["yes", "no"])
    return question


def test_an_owner_answers_with_htmx_and_the_row_shows_the_answer(owner, asked):
    page = owner.get("/portal/questions/")
    assert "Ship it?" in page.content.decode() and 'value="yes"' in page.content.decode()
    dashboard = owner.get("/portal/").content.decode()
    assert "waiting for input" in dashboard  # the role table says what coders are stuck on
    agent_page = owner.get(f"/portal/agents/{asked.agent_id}/").content.decode()
    assert "answer its question" in agent_page
    response = owner.post(
        f"/portal/questions/{asked.pk}/answer/", {"answer": "yes"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert f'id="question-{asked.pk}"' in body and "Answer:" in body and "<html" not in body
    asked.refresh_from_db()
    assert (asked.answer, asked.answered_by_label) == ("yes", "olga")
    assert AuditEvent.objects.filter(action=AuditAction.QUESTION_ANSWER).count() == 1
    again = owner.post(
        f"/portal/questions/{asked.pk}/answer/", {"answer_text": "no"}, HTTP_HX_REQUEST="true"
    )
    assert again.status_code == 422 and "answered already" in again.content.decode()
    assert owner.get("/portal/questions/").content.decode().count("Ship it?") == 0
    assert "Ship it?" in owner.get("/portal/questions/?state=answered").content.decode()


def test_a_viewer_sees_but_cannot_answer(customer, django_user_model, asked):
    viewer = member_client(customer, django_user_model, "viewer", "vera")
    page = viewer.get("/portal/questions/").content.decode()
    assert "Ship it?" in page and "Owners and admins answer" in page
    assert viewer.post(f"/portal/questions/{asked.pk}/answer/", {"answer": "x"}).status_code == 403
    assert Question.objects.get().answered_at is None


def test_another_customers_question_is_404(other_customer, django_user_model, asked):
    stranger = member_client(other_customer, django_user_model, "owner", "otto")
    assert "Ship it?" not in stranger.get("/portal/questions/?state=all").content.decode()
    answer = stranger.post(f"/portal/questions/{asked.pk}/answer/", {"answer": "no"})
    assert answer.status_code == 404
    assert Question.objects.get().answered_at is None


def test_blank_or_nul_answers_are_refused(owner, asked):
    for data in ({"answer_text": "  "}, {"answer_text": "a\x00b"}):
        response = owner.post(f"/portal/questions/{asked.pk}/answer/", data, HTTP_HX_REQUEST="true")
        assert response.status_code == 422
    assert Question.objects.get().answered_at is None
    assert asked.agent.activity == AgentActivity.WAITING_FOR_INPUT


def test_an_owner_sets_a_budget_on_the_settings_page_and_a_viewer_cannot(
    owner, customer, django_user_model
):
    factories.license(customer, max_agents=5)
    saved = owner.post(
        "/portal/settings/budgets/",
        {"scope": "role", "key": "coder", "period": "day", "max_cost_usd": "12.5"},
        follow=True,
    )
    assert "Budget saved." in saved.content.decode()
    assert 'data-budget="role:coder:day"' in saved.content.decode()
    assert AuditEvent.objects.filter(action=AuditAction.BUDGET_UPDATE).count() == 1
    wrong = owner.post(
        "/portal/settings/budgets/",
        {"scope": "role", "key": "wizard", "period": "day", "max_tokens": "5"},
        follow=True,
    )
    assert "Budget not saved" in wrong.content.decode()
    viewer = member_client(customer, django_user_model, "viewer", "vera")
    refused = viewer.post(
        "/portal/settings/budgets/", {"scope": "customer", "period": "day", "max_tokens": "1"}
    )
    assert refused.status_code == 403
    assert "Owners set budgets" in viewer.get("/portal/settings/").content.decode()
