"""Questions running jobs asked, for the portal's Questions page and the customer API."""

from django.db.models import QuerySet

from fleet.choices import JobStatus
from fleet.errors import NotFound
from fleet.models import Customer, Question

QUESTION_STATES = ("open", "answered", "all")


def question_list(customer: Customer | int, state: str = "open") -> QuerySet[Question]:
    """The customer's questions: open ones (unanswered, their job still running: a job
    that finished or went back to the queue asks nothing any more) oldest first, the
    longest wait on top; answered ones newest first."""
    rows = Question.objects.filter(customer=customer).select_related("job", "agent")
    if state == "open":
        return rows.filter(answered_at__isnull=True, job__status=JobStatus.RUNNING).order_by(
            "asked_at", "pk"
        )
    if state == "answered":
        rows = rows.filter(answered_at__isnull=False)
    return rows.order_by("-asked_at", "-pk")


def question_get(customer: Customer | int, question_id: int) -> Question:
    question = question_list(customer, "all").filter(pk=question_id).first()
    if question is None:
        raise NotFound("No such question.")
    return question
