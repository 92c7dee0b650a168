"""Questions a running job asks a person (agents ask and acknowledge; customer automation
lists and answers with an API key), and the customer's budget caps."""

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Query, Router, Status
from ninja.pagination import paginate

from fleet.api.auth import agent_auth, authed_agent, authed_key, key_jobs, key_read, key_settings
from fleet.api.pagination import KeysetPagination
from fleet.api.schemas import (
    AnswerIn,
    BudgetOut,
    BudgetsIn,
    QuestionFilters,
    QuestionIn,
    QuestionOut,
    errors,
)
from fleet.api.throttles import ApiKeyThrottle
from fleet.http import client_address
from fleet.models import Customer, Question
from fleet.selectors.questions import question_get, question_list
from fleet.services.audit import Actor
from fleet.services.budgets import BudgetStop, CapSetting, budget_caps_set, budgets_with_spend
from fleet.services.questions import question_ack, question_answer, question_ask

router = Router(tags=["questions"])


@router.post(
    "/jobs/{job_id}/questions",
    auth=agent_auth,
    response={200: QuestionOut, 201: QuestionOut, **errors(401, 404, 409, 413, 422)},
    summary="Ask a person about a running job (the agent waits for the answer)",
)
def ask(request: HttpRequest, job_id: int, body: QuestionIn) -> Status[Question]:
    """Only the agent running the job, while it runs (else 409 `job_not_held`). The agent's
    activity becomes `waiting_for_input`; the answer arrives in its heartbeats' `answers`.
    Asking the same open question again answers 200 with the first one."""
    question, created = question_ask(
        agent=authed_agent(request),
        job_id=job_id,
        text=body.text,
        options=body.options,
        ip_address=client_address(request),
    )
    return Status(201 if created else 200, question)


@router.post(
    "/questions/{question_id}/ack",
    auth=agent_auth,
    response={200: QuestionOut, **errors(401, 404, 409, 422)},
    summary="Say the agent took an answer: heartbeats stop carrying it (idempotent)",
)
def ack(request: HttpRequest, question_id: int) -> Question:
    return question_ack(
        agent=authed_agent(request), question_id=question_id, ip_address=client_address(request)
    )


@router.get(
    "/questions",
    auth=key_read,
    throttle=[ApiKeyThrottle()],
    response={200: list[QuestionOut], **errors(401, 403, 422, 429)},
    summary="The customer's questions (open, answered or all), newest first",
)
@paginate(KeysetPagination)
def list_questions(request: HttpRequest, filters: Query[QuestionFilters]) -> QuerySet[Question]:
    return question_list(authed_key(request).customer_id, filters.state)


@router.get(
    "/questions/{question_id}",
    auth=key_read,
    throttle=[ApiKeyThrottle()],
    response={200: QuestionOut, **errors(401, 403, 404, 422, 429)},
    summary="One question",
)
def get_question(request: HttpRequest, question_id: int) -> Question:
    return question_get(authed_key(request).customer_id, question_id)


@router.post(
    "/questions/{question_id}/answer",
    auth=key_jobs,
    throttle=[ApiKeyThrottle()],
    response={200: QuestionOut, **errors(401, 403, 404, 409, 413, 422, 429)},
    summary="Answer an open question (the same answer again is 200; another is 409)",
)
def answer(request: HttpRequest, question_id: int, body: AnswerIn) -> Question:
    key = authed_key(request)
    return question_answer(
        customer=key.customer_id,
        question_id=question_id,
        answer=body.answer,
        actor=Actor.for_api_key(key, client_address(request)),
    )


def _budget_out(stop: BudgetStop) -> BudgetOut:
    return BudgetOut(
        scope=stop.scope,
        key=stop.scope_key,
        period=stop.period,
        max_cost_usd=stop.max_cost_usd,
        max_tokens=stop.max_tokens,
        spent_usd=stop.spent_usd,
        spent_tokens=stop.spent_tokens,
        reached=stop.reached,
    )


@router.get(
    "/budgets",
    auth=key_read,
    throttle=[ApiKeyThrottle()],
    response={200: list[BudgetOut], **errors(401, 403, 429)},
    summary="The customer's budget caps with what the current day or month spent",
)
def get_budgets(request: HttpRequest) -> list[BudgetOut]:
    return [_budget_out(stop) for stop in budgets_with_spend(authed_key(request).customer_id)]


@router.patch(
    "/budgets",
    auth=key_settings,
    throttle=[ApiKeyThrottle()],
    response={200: list[BudgetOut], **errors(401, 403, 404, 413, 422, 429)},
    summary="Set or remove budget caps (audited); claims see them at once",
)
def patch_budgets(request: HttpRequest, body: BudgetsIn) -> list[BudgetOut]:
    """Each cap is (scope, key, period); both limits null removes it. An agent id that is
    not the customer's is 404; a role that does not exist is 422."""
    key = authed_key(request)
    customer = Customer.objects.get(pk=key.customer_id)
    budget_caps_set(
        customer=customer,
        caps=[
            CapSetting(cap.scope, cap.key, cap.period, cap.max_cost_usd, cap.max_tokens)
            for cap in body.caps
        ],
        actor=Actor.for_api_key(key, client_address(request)),
    )
    return [_budget_out(stop) for stop in budgets_with_spend(customer)]
