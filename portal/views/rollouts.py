"""Upgrades: owners start a wave, watch each batch and the latest gate, and steer it."""

from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from django.contrib import messages
from django.http import Http404, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from fleet import selectors
from fleet.choices import AgentStatus, RolloutAction
from fleet.errors import FleetError
from fleet.http import request_actor
from fleet.models import Customer
from fleet.services.rollouts import (
    rollout_abort,
    rollout_pause,
    rollout_resume,
    rollout_resume_anyway,
    rollout_retry_failed,
    rollout_set_floor,
    rollout_skip_soak,
    rollout_start,
)
from portal.forms import CANARY_CHOICE, StartRolloutForm
from portal.views.base import (
    PortalRequest,
    member_view,
    note_or_message,
    page_context,
    partial_or_page,
)

AGENT_OPTIONS = 20  # the picker's options as you type


def _start_form(customer: Customer, data: QueryDict | None = None) -> StartRolloutForm:
    releases = selectors.release_list_for(selectors.customer_channel(customer))
    online = selectors.agent_search(customer, {"status": AgentStatus.ONLINE})
    form = StartRolloutForm(
        data, releases=releases, agents=online, options_url=reverse("portal:agent_options")
    )
    form.fields["release"].initial = releases.first()  # the newest release the fleet sees
    return form


@member_view()
def agent_options(request: PortalRequest, customer: Customer) -> HttpResponse:
    """The picker's options: the first online agents whose name, unit or host has the text
    typed (`q`, or the picker field's own name, as htmx sends it)."""
    text = (request.GET.get("q") or request.GET.get("canary") or "").replace("\x00", "")
    text = CANARY_CHOICE.sub("", text).strip()[:200]
    agents = selectors.agent_search(customer, {"status": AgentStatus.ONLINE, "q": text})
    return render(
        request,
        "portal/upgrades.html#agent_options",
        {"agents": agents.order_by("name", "pk")[:AGENT_OPTIONS]},
    )


@member_view(owner=True, posts_only=True)
def upgrades(request: PortalRequest, customer: Customer) -> HttpResponse:
    form = _start_form(customer)
    if request.method == "POST":
        form = _start_form(customer, request.POST)
        if form.is_valid():
            try:
                rollout = rollout_start(
                    customer=customer,
                    release=form.cleaned_data["release"],
                    actor=request_actor(request),
                    reason=form.cleaned_data["reason"],
                    **form.settings(),
                )
                return redirect("portal:upgrade_detail", rollout_id=rollout.pk)
            except FleetError as exc:
                field = exc.extra.get("field")
                form.add_error(field if field in form.fields else None, exc.detail)
    return render(
        request,
        "portal/upgrades.html",
        page_context(
            request,
            form=form,
            rollouts=selectors.rollout_list(customer)[:50],
        ),
        status=422 if form.errors else 200,
    )


@member_view()
def upgrade_detail(request: PortalRequest, customer: Customer, rollout_id: int) -> HttpResponse:
    rollout = selectors.rollout_get(customer, rollout_id)
    return render(
        request,
        partial_or_page(request, "portal/upgrade_detail.html", "progress"),
        page_context(
            request,
            rollout=rollout,
            batches=selectors.rollout_batches(rollout),
            steer_actions=rollout.actions,
        ),
    )


# Every steering service takes the wave, who steers and why; changing the floor also
# takes the new floor (a percentage in the form).
STEER_ACTIONS: dict[RolloutAction, Callable[..., object]] = {
    RolloutAction.PAUSE: rollout_pause,
    RolloutAction.RESUME: rollout_resume,
    RolloutAction.RESUME_ANYWAY: rollout_resume_anyway,
    RolloutAction.SET_FLOOR: rollout_set_floor,
    RolloutAction.ABORT: rollout_abort,
    RolloutAction.SKIP_SOAK: rollout_skip_soak,
    RolloutAction.RETRY_FAILED: rollout_retry_failed,
}


@member_view(owner=True)
@require_POST
def upgrade_steer(
    request: PortalRequest, customer: Customer, rollout_id: int, action: str
) -> HttpResponse:
    rollout = selectors.rollout_get(customer, rollout_id)
    if action not in RolloutAction.values:
        raise Http404("No such action.")
    service = STEER_ACTIONS[RolloutAction(action)]
    extra: dict[str, object] = {}
    if action == RolloutAction.SET_FLOOR:
        try:
            floor = Decimal(request.POST.get("floor", "")) / 100
        except InvalidOperation:
            floor = Decimal("NaN")
        if not floor.is_finite():  # "abc", "NaN", "Infinity"
            messages.error(request, "The floor is a percentage, such as 80.")
            return redirect("portal:upgrade_detail", rollout_id=rollout.pk)
        extra["floor"] = floor
    note = note_or_message(request)
    if note is not None:
        try:
            service(rollout=rollout, actor=request_actor(request), reason=note, **extra)
            messages.success(request, f"Done: {RolloutAction(action).label.lower()}.")
        except FleetError as exc:
            messages.error(request, exc.detail)
    return redirect("portal:upgrade_detail", rollout_id=rollout.pk)
