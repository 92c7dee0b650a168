"""Questions: what running jobs ask a person. Every member sees them; owners and admins
answer (audited), and the asking agent gets the answer on its next heartbeat."""

from django import forms
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from fleet.errors import FleetError
from fleet.http import request_actor
from fleet.models import Customer
from fleet.models.questions import ANSWER_TEXT_MAX
from fleet.selectors.questions import QUESTION_STATES, question_get, question_list
from fleet.services.questions import question_answer
from portal.views.base import PortalRequest, member_view, page_context, paginate


class AnswerForm(forms.Form):
    answer = forms.CharField(max_length=ANSWER_TEXT_MAX, strip=True)

    def clean_answer(self) -> str:
        answer = self.cleaned_data["answer"]
        if "\x00" in answer:
            raise forms.ValidationError("No NUL bytes, please.")
        return answer


@member_view()
def questions(request: PortalRequest, customer: Customer) -> HttpResponse:
    state = request.GET.get("state", "open")
    state = state if state in QUESTION_STATES else "open"
    rows = question_list(customer, state)
    return render(
        request,
        "portal/questions.html",
        page_context(request, state=state, page=paginate(request, rows)),
    )


@member_view(steer=True)
@require_POST
def question_answer_view(
    request: PortalRequest, customer: Customer, question_id: int
) -> HttpResponse:
    """With htmx, the answered question replaces its row; else back to the list."""
    question = question_get(customer, question_id)
    # An option's button sends `answer`; the text box sends `answer_text`.
    form = AnswerForm({"answer": request.POST.get("answer") or request.POST.get("answer_text", "")})
    error = ""
    if form.is_valid():
        try:
            question = question_answer(
                customer=customer,
                question_id=question.pk,
                answer=form.cleaned_data["answer"],
                actor=request_actor(request),
            )
        except FleetError as exc:  # answered meanwhile by someone else
            error = exc.detail
            question = question_get(customer, question_id)
    else:
        error = "; ".join(str(e) for errors in form.errors.values() for e in errors)
    if not request.htmx:
        return redirect("portal:questions")
    return render(
        request,
        "portal/questions.html#question",
        page_context(request, q=question, error=error),
        status=422 if error else 200,
    )
