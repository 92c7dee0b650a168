"""A running job asks a person (the agent waits, `waiting_for_input`); an owner or admin
answers on the portal or with an API key; the answer rides the agent's heartbeats
(`answers`) until the agent acknowledges it: at-least-once delivery, and the agent
drops an answer whose question id it has already taken (ids are stable)."""

from django.db import transaction
from django.utils import timezone

from fleet.agent_cache import agent_facts_changed
from fleet.choices import AgentActivity, AuditAction, JobStatus
from fleet.errors import JobNotHeld, NotFound, QuestionNotAnswered, QuestionNotOpen
from fleet.models import Agent, Customer, Job, Question
from fleet.services.audit import Actor, audit_record

ANSWERS_PER_HEARTBEAT = 100


@transaction.atomic
def question_ask(
    *, agent: Agent, job_id: int, text: str, options: list[str], ip_address: str | None = None
) -> tuple[Question, bool]:
    """Ask about a job the agent runs. The agent's activity becomes waiting_for_input at
    once. The same open question asked again (an agent's retry) is the first one
    (created False)."""
    job = Job.objects.filter(pk=job_id, customer_id=agent.customer_id).first()
    if job is None:
        raise NotFound("No such job.")
    if job.status != JobStatus.RUNNING or job.agent_id != agent.pk:
        raise JobNotHeld(
            "Only the agent running this job may ask about it, while it runs.", job_id=job_id
        )
    asked = Question.objects.filter(job=job, text=text, answered_at__isnull=True).first()
    if asked is not None:
        return asked, False
    now = timezone.now()
    question = Question.objects.create(
        customer_id=agent.customer_id,
        job=job,
        agent=agent,
        text=text,
        options=options,
        asked_at=now,
    )
    waiting = {
        "activity": AgentActivity.WAITING_FOR_INPUT,
        "activity_detail": text[:500],
        "activity_provider": "",
    }
    Agent.objects.filter(pk=agent.pk).update(**waiting, activity_since=now)
    for name, value in {**waiting, "activity_since": now}.items():
        setattr(agent, name, value)
    audit_record(
        actor=Actor.for_agent(agent, ip_address),
        action=AuditAction.QUESTION_ASK,
        target=question,
        customer=agent.customer_id,
        changes={"job": [None, job.pk], "text": [None, text[:200]]},
    )
    return question, True


@transaction.atomic
def question_answer(
    *, customer: Customer | int, question_id: int, answer: str, actor: Actor
) -> Question:
    """Answer an open question (the first answer stands; the same answer again changes
    nothing). The asking agent is told on its next heartbeat."""
    question = (
        Question.objects.select_for_update().filter(pk=question_id, customer=customer).first()
    )
    if question is None:
        raise NotFound("No such question.")
    if question.answered_at is not None:
        if question.answer == answer:
            return question
        raise QuestionNotOpen(
            "This question was answered already.", question_id=question.pk, answer=question.answer
        )
    question.answer, question.answered_at = answer, timezone.now()
    question.answered_by, question.answered_by_label = actor.user, actor.label[:200]
    question.save(update_fields=["answer", "answered_at", "answered_by", "answered_by_label"])
    if question.agent_id is not None:  # its next heartbeat reads the answer
        agent_facts_changed(agent_ids=[question.agent_id])
    audit_record(
        actor=actor,
        action=AuditAction.QUESTION_ANSWER,
        target=question,
        customer=question.customer_id,
        changes={
            "answer": [None, answer[:200]],
            "waited_seconds": [None, round(question.waited_seconds or 0)],
        },
    )
    return question


@transaction.atomic
def question_ack(*, agent: Agent, question_id: int, ip_address: str | None = None) -> Question:
    """The agent took the answer: its heartbeats stop carrying it. Acknowledging again
    changes nothing."""
    question = Question.objects.select_for_update().filter(pk=question_id, agent=agent).first()
    if question is None:
        raise NotFound("No such question.")
    if question.answered_at is None:
        raise QuestionNotAnswered("This question has no answer yet.", question_id=question.pk)
    if question.acked_at is not None:
        return question
    question.acked_at = timezone.now()
    question.save(update_fields=["acked_at"])
    agent_facts_changed(agent_ids=[agent.pk])  # its heartbeats stop reading answers
    audit_record(
        actor=Actor.for_agent(agent, ip_address),
        action=AuditAction.QUESTION_ACK,
        target=question,
        customer=agent.customer_id,
    )
    return question


def answers_for(agent: Agent) -> list[Question]:
    """The answers a heartbeat carries: those not yet acknowledged. Read only when the
    agent's facts say there are some, so a steady beat reads nothing."""
    if agent.facts is None or not agent.facts.answers_pending:
        return []
    return list(
        Question.objects.filter(agent=agent, answered_at__isnull=False, acked_at__isnull=True)
        .only("pk", "job_id", "answer")
        .order_by("pk")[:ANSWERS_PER_HEARTBEAT]
    )
