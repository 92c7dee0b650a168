"""Customer pages. Every view resolves the member's customer first and reads through a
selector that takes it, so another customer's ids are a 404; writes call one service.
Owners and admins steer; viewers only look (the server refuses them, not just the UI)."""

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from fleet import selectors
from fleet.choices import AgentRole, AgentStatus, AnomalyKind, JobStatus, MemberRole
from fleet.errors import FleetError, NotFound
from fleet.models import Membership, Release
from fleet.services.agents import agent_decommission
from fleet.services.anomalies import anomalies_reopen, anomalies_resolve
from fleet.services.api_keys import api_key_mint, api_key_revoke
from fleet.services.audit import Actor
from fleet.services.detections import host_memory_budget_mb
from fleet.services.jobs import job_cancel, job_submit
from fleet.services.rollouts import (
    rollout_abort,
    rollout_pause,
    rollout_resume,
    rollout_retry_failed,
    rollout_skip_soak,
    rollout_start,
)
from fleet.services.tokens import token_revoke, tokens_mint_for_seats
from portal.charts import downsample, sparkline
from portal.forms import (
    ApiKeyForm,
    MintTokensForm,
    NoteForm,
    PlanForm,
    StartRolloutForm,
    SubmitJobForm,
)

STEERING = (MemberRole.OWNER, MemberRole.ADMIN)  # mint, revoke, resolve, submit
SESSION_CUSTOMER = "portal_customer"
PAGE_SIZE = 50


def _membership(request: HttpRequest) -> Membership | None:
    """The membership the session chose (or the first); every membership is kept on the
    request for the customer switcher."""
    memberships = list(selectors.membership_list(request.user))
    request.memberships = memberships  # type: ignore[attr-defined]
    chosen = request.session.get(SESSION_CUSTOMER)
    return next((m for m in memberships if m.customer_id == chosen), None) or (
        memberships[0] if memberships else None
    )


def member_view(*, steer: bool = False, owner: bool = False, posts_only: bool = False) -> Callable:
    """Log in, resolve the customer (a user without one sees what to do), and refuse
    viewers (or non-owners) the writes: every request, or with `posts_only` the POSTs of
    a page every member may read."""

    def wrap(view: Callable) -> Callable:
        @wraps(view)
        def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                login = f"{reverse('portal:login')}?next={request.path}"
                if request.htmx:  # type: ignore[attr-defined]
                    # A poll after the session ended: load the login page, not swap it in.
                    return HttpResponse(status=401, headers={"HX-Redirect": login})
                return redirect(login)
            membership = _membership(request)
            if membership is None:
                return render(request, "portal/no_customer.html")
            checked = request.method == "POST" or not posts_only
            if checked and (
                (owner and membership.role != MemberRole.OWNER)
                or (steer and membership.role not in STEERING)
            ):
                who = "owners" if owner else "owners and admins"
                return HttpResponse(
                    f"Forbidden: only {who} can do that; your role is {membership.role}.",
                    status=403,
                )
            request.membership = membership  # type: ignore[attr-defined]
            try:
                return view(request, membership.customer, *args, **kwargs)
            except NotFound as exc:
                raise Http404(exc.detail) from exc

        return inner

    return wrap


def _ctx(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    membership: Membership = request.membership  # type: ignore[attr-defined]
    return {
        "membership": membership,
        "customer": membership.customer,
        "memberships": request.memberships,  # type: ignore[attr-defined]
        "can_steer": membership.role in STEERING,
        "is_owner": membership.role == MemberRole.OWNER,
        **extra,
    }


def _actor(request: HttpRequest) -> Actor:
    return Actor.from_request(request)


def _page(request: HttpRequest, rows: Any) -> Any:
    return Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))


def _partial(request: HttpRequest, template: str, partial: str) -> str:
    return f"{template}#{partial}" if request.htmx else template  # type: ignore[attr-defined]


@login_required
@require_POST
def switch_customer(request: HttpRequest) -> HttpResponse:
    slug = request.POST.get("customer", "").replace("\x00", "")
    membership = selectors.membership_list(request.user).filter(customer__slug=slug).first()
    if membership is not None:
        request.session[SESSION_CUSTOMER] = membership.customer_id
    return redirect("portal:dashboard")


# --- dashboard ----------------------------------------------------------------------------


def _charts(customer: Any) -> dict[str, Any]:
    series = selectors.snapshot_series(customer)

    def chart(field: str, pick: Callable[[list[float]], float] = max, **kwargs: Any) -> Any:
        return sparkline(downsample([getattr(s, field) for s in series], pick=pick), **kwargs)

    return {
        "online": chart("online_ratio", pick=min, floor=0.0, ceiling=1.0),
        "throughput": chart("jobs_completed_last_hour", floor=0.0),
        "anomalies": chart("anomalies_unresolved", floor=0.0),
        "skew": chart("agents_not_on_latest", floor=0.0),
    }


@member_view()
def dashboard(request: HttpRequest, customer: Any) -> HttpResponse:
    context = _ctx(
        request,
        metrics=selectors.fleet_metrics(customer),
        target=settings.ONLINE_RATIO_TARGET,
        charts=_charts(customer),
        advice=selectors.fleet_advice(customer),
        poll_seconds=settings.PORTAL_POLL_SECONDS,
    )
    if not request.htmx:  # type: ignore[attr-defined]
        # The header and the findings lie outside the numbers a poll swaps in.
        seats = selectors.license_seats(customer)
        context.update(
            license=seats.license,
            seats=seats,
            anti_patterns=selectors.anomaly_list(customer).filter(kind=AnomalyKind.ANTI_PATTERN),
        )
    return render(request, _partial(request, "portal/dashboard.html", "numbers"), context)


# --- tokens -------------------------------------------------------------------------------


@never_cache  # a secret shown once must not come back from the browser's cache
@member_view(steer=True, posts_only=True)
def tokens(request: HttpRequest, customer: Any) -> HttpResponse:
    form = MintTokensForm()
    minted: list[tuple[Any, str]] = []
    if request.method == "POST":
        form = MintTokensForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                minted = tokens_mint_for_seats(
                    customer=customer,
                    count=data["count"],
                    role=data["role"],
                    expires_in=timedelta(days=data["expires_in_days"]),
                    note=data["note"],
                    actor=_actor(request),
                )
                form = MintTokensForm()
            except FleetError as exc:
                form.add_error("count", exc.detail)
    rows = _page(request, selectors.token_list(customer))
    server = request.build_absolute_uri("/").rstrip("/")
    # Minting by htmx swaps only the secrets in: a reload is then a plain GET that shows
    # them no more (and never mints twice). The table then refreshes itself.
    part = "token_table" if request.GET.get("part") == "table" else "mint"
    response = render(
        request,
        _partial(request, "portal/tokens.html", part),
        _ctx(
            request,
            form=form,
            minted=minted,
            page=rows,
            server=server,
            seats=selectors.license_seats(customer),
        ),
        status=422 if form.errors else 200,
    )
    if minted:
        response["HX-Trigger"] = "tokens-changed"
    return response


@member_view(steer=True)
@require_POST
def token_revoke_view(request: HttpRequest, customer: Any, token_id: int) -> HttpResponse:
    token = selectors.token_get(customer, token_id)
    token_revoke(token=token, actor=_actor(request))
    token.refresh_from_db()
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "portal/tokens.html#token_row", _ctx(request, token=token))
    return redirect("portal:tokens")


# --- agents and hosts ---------------------------------------------------------------------


@member_view()
def agents(request: HttpRequest, customer: Any) -> HttpResponse:
    filters = {
        k: request.GET.get(k, "").replace("\x00", "").strip()[:200]
        for k in ("status", "role", "version", "host", "zone", "q")
    }
    page = _page(request, selectors.agent_search(customer, filters))
    return render(
        request,
        _partial(request, "portal/agents.html", "agent_table"),
        _ctx(
            request,
            page=page,
            filters=filters,
            choices=selectors.agent_filter_choices(customer),
            statuses=AgentStatus.choices,
            roles=AgentRole.choices,
            query=urlencode({k: v for k, v in filters.items() if v}),
        ),
    )


@member_view()
def agent_detail(request: HttpRequest, customer: Any, agent_id: int) -> HttpResponse:
    agent = selectors.agent_get(customer, agent_id)
    return render(
        request,
        "portal/agent_detail.html",
        _ctx(
            request,
            agent=agent,
            jobs=agent.jobs.order_by("-queued_at")[:20],
            anomalies=agent.anomalies.order_by("-last_seen")[:20],
            upgrades=selectors.upgrade_history(agent)[:20],
            heartbeats=selectors.audit_list(customer).filter(
                target_type="fleet.agent", target_id=str(agent.pk)
            )[:20],
        ),
    )


@member_view(steer=True)
@require_POST
def agent_decommission_view(request: HttpRequest, customer: Any, agent_id: int) -> HttpResponse:
    agent = selectors.agent_get(customer, agent_id)
    if agent_decommission(agent=agent, actor=_actor(request)):
        messages.success(request, f"{agent.name} is decommissioned; its seat is free.")
    return redirect("portal:agent_detail", agent_id=agent.pk)


@member_view()
def hosts(request: HttpRequest, customer: Any) -> HttpResponse:
    rows = list(selectors.host_list(customer))
    zones: Counter[str] = Counter()
    for host in rows:
        host.budget_mb = host_memory_budget_mb(host.n_agents, host.n_testers)  # type: ignore[attr-defined]
        zones[host.zone or "no zone"] += host.n_agents  # type: ignore[attr-defined]
    return render(request, "portal/hosts.html", _ctx(request, hosts=rows, zones=dict(zones)))


# --- jobs ---------------------------------------------------------------------------------


@member_view(steer=True, posts_only=True)
def jobs(request: HttpRequest, customer: Any) -> HttpResponse:
    tab = request.GET.get("tab", JobStatus.QUEUED)
    form = SubmitJobForm()
    if request.method == "POST":
        form = SubmitJobForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            job, _ = job_submit(
                customer=customer,
                role=data["role"],
                priority=data["priority"],
                payload={"repo": data["repo"], "ref": data["ref"], "task": data["task"]},
                actor=_actor(request),
            )
            messages.success(request, f"Job {job.pk} is queued for a {job.role}.")
            return redirect(f"{reverse('portal:jobs')}?tab=queued")
    return render(
        request,
        "portal/jobs.html",
        _ctx(
            request,
            tab=tab,
            form=form,
            counts=selectors.job_counts(customer),
            page=_page(request, selectors.job_list(customer, tab)),
            now=timezone.now(),
        ),
        status=422 if form.errors else 200,
    )


@member_view(steer=True)
@require_POST
def job_cancel_view(request: HttpRequest, customer: Any, job_id: int) -> HttpResponse:
    try:
        job_cancel(customer=customer, job_id=job_id, actor=_actor(request))
        messages.success(request, f"Job {job_id} is cancelled.")
    except NotFound:
        raise
    except FleetError as exc:
        messages.error(request, exc.detail)
    return redirect(f"{reverse('portal:jobs')}?tab=queued")


# --- anomalies ----------------------------------------------------------------------------


@member_view()
def anomalies(request: HttpRequest, customer: Any) -> HttpResponse:
    state = request.GET.get("state", "open")
    return render(
        request,
        "portal/anomalies.html",
        _ctx(
            request,
            state=state,
            page=_page(request, selectors.anomaly_list(customer, state)),
        ),
    )


def _note_or_back(request: HttpRequest) -> str | None:
    form = NoteForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Add a note: what you did, or why.")
        return None
    return form.cleaned_data["note"]


@member_view(steer=True)
@require_POST
def anomaly_resolve_view(request: HttpRequest, customer: Any, anomaly_id: int) -> HttpResponse:
    anomaly = selectors.anomaly_get(customer, anomaly_id)
    note = _note_or_back(request)
    if note is not None:
        anomalies_resolve(where=Q(pk=anomaly.pk), note=note, actor=_actor(request))
        messages.success(request, "Resolved.")
    return redirect("portal:anomalies")


@member_view(steer=True)
@require_POST
def anomaly_reopen_view(request: HttpRequest, customer: Any, anomaly_id: int) -> HttpResponse:
    anomaly = selectors.anomaly_get(customer, anomaly_id)
    note = _note_or_back(request)
    if note is not None:
        if anomalies_reopen(ids=[anomaly.pk], note=note, actor=_actor(request)):
            messages.success(request, "Reopened.")
        else:
            messages.error(request, "A newer finding with this fingerprint is already open.")
    return redirect(f"{reverse('portal:anomalies')}?state=resolved")


# --- upgrades -----------------------------------------------------------------------------


def _start_form(customer: Any, data: Any = None) -> StartRolloutForm:
    latest = selectors.license_current(customer)
    channel = latest.channel if latest else "stable"
    releases = Release.objects.filter(yanked=False, channel__in=["stable", channel]).order_by(
        "-version"
    )
    online = selectors.agent_search(customer, {"status": AgentStatus.ONLINE})
    form = StartRolloutForm(data, releases=releases, agents=online)
    form.fields["release"].initial = releases.first()  # the newest release the fleet sees
    return form


@member_view(owner=True, posts_only=True)
def upgrades(request: HttpRequest, customer: Any) -> HttpResponse:
    form = _start_form(customer)
    if request.method == "POST":
        form = _start_form(customer, request.POST)
        if form.is_valid():
            try:
                rollout = rollout_start(
                    customer=customer,
                    release=form.cleaned_data["release"],
                    actor=_actor(request),
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
        _ctx(
            request,
            form=form,
            rollouts=selectors.rollout_list(customer)[:50],
        ),
        status=422 if form.errors else 200,
    )


@member_view()
def upgrade_detail(request: HttpRequest, customer: Any, rollout_id: int) -> HttpResponse:
    rollout = selectors.rollout_get(customer, rollout_id)
    steer = {
        "canary": [
            ("pause", "Pause"),
            ("skip_soak", "Skip the rest of the soak"),
            ("retry_failed", "Retry failed agents"),
            ("abort", "Abort"),
        ],
        "rolling": [
            ("pause", "Pause"),
            ("skip_soak", "Skip the rest of the watch"),
            ("retry_failed", "Retry failed agents"),
            ("abort", "Abort"),
        ],
        "paused": [
            ("resume", "Resume"),
            ("retry_failed", "Retry failed agents"),
            ("abort", "Abort"),
        ],
    }.get(rollout.state, [])
    return render(
        request,
        _partial(request, "portal/upgrade_detail.html", "progress"),
        _ctx(
            request,
            rollout=rollout,
            batches=selectors.rollout_batches(rollout),
            steer_actions=steer,
        ),
    )


STEER_ACTIONS: dict[str, Callable[..., Any]] = {
    "pause": rollout_pause,
    "resume": rollout_resume,
    "abort": rollout_abort,
    "skip_soak": rollout_skip_soak,
    "retry_failed": rollout_retry_failed,
}


@member_view(owner=True)
@require_POST
def upgrade_steer(
    request: HttpRequest, customer: Any, rollout_id: int, action: str
) -> HttpResponse:
    rollout = selectors.rollout_get(customer, rollout_id)
    service = STEER_ACTIONS.get(action)
    if service is None:
        raise Http404("No such action.")
    note = _note_or_back(request)
    if note is not None:
        try:
            service(rollout=rollout, actor=_actor(request), reason=note)
            messages.success(request, f"Done: {action.replace('_', ' ')}.")
        except FleetError as exc:
            messages.error(request, exc.detail)
    return redirect("portal:upgrade_detail", rollout_id=rollout.pk)


# --- plan, keys, activity -----------------------------------------------------------------


@member_view()
def plan(request: HttpRequest, customer: Any) -> HttpResponse:
    form = PlanForm(request.GET or None)
    rows = (
        selectors.fleet_sizing(customer, form.cleaned_data["repo_loc"]) if form.is_valid() else []
    )
    return render(
        request,
        "portal/plan.html",
        _ctx(
            request,
            form=form,
            rows=rows,
            seats=selectors.license_seats(customer),
            advice=selectors.fleet_advice(customer),
            needed=sum(max(r.recommended_min - r.current, 0) for r in rows),
        ),
    )


@never_cache
@member_view(steer=True, posts_only=True)
def api_keys(request: HttpRequest, customer: Any) -> HttpResponse:
    form = ApiKeyForm()
    minted = None
    if request.method == "POST":
        form = ApiKeyForm(request.POST)
        if form.is_valid():
            minted = api_key_mint(
                customer=customer, name=form.cleaned_data["name"], actor=_actor(request)
            )
            form = ApiKeyForm()
    return render(
        request,
        _partial(request, "portal/api_keys.html", "mint"),
        _ctx(
            request,
            form=form,
            minted=minted,
            keys=selectors.api_key_list(customer),
        ),
        status=422 if form.errors else 200,
    )


@member_view(steer=True)
@require_POST
def api_key_revoke_view(request: HttpRequest, customer: Any, key_id: int) -> HttpResponse:
    api_key_revoke(key=selectors.api_key_get(customer, key_id), actor=_actor(request))
    messages.success(request, "The key is revoked; it stops working at once.")
    return redirect("portal:api_keys")


@member_view()
def activity(request: HttpRequest, customer: Any) -> HttpResponse:
    return render(
        request,
        "portal/activity.html",
        _ctx(
            request,
            page=_page(request, selectors.audit_list(customer)),
        ),
    )
