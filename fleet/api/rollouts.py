"""Upgrade waves in the customer API: what the Upgrades pages show, and every control they
offer. On the portal only owners start and steer waves; an API key acts for its customer
as an owner would, and each change is audited with the key's name."""

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Router, Status
from ninja.errors import ValidationError
from ninja.pagination import paginate

from fleet.api.auth import authed_key, key_read, key_rollouts
from fleet.api.customers import api_key_actor
from fleet.api.pagination import KeysetPagination
from fleet.api.schemas import (
    RolloutDetailOut,
    RolloutFloorIn,
    RolloutOut,
    RolloutStartIn,
    RolloutSteerIn,
    errors,
)
from fleet.api.throttles import ApiKeyThrottle
from fleet.choices import AgentStatus
from fleet.models import Rollout
from fleet.selectors import (
    agent_search,
    customer_channel,
    release_list_for,
    rollout_get,
    rollout_list,
)
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

# Reads take the `read` scope; starting and steering waves take `rollouts`.
router = Router(tags=["upgrade waves"], auth=key_read, throttle=[ApiKeyThrottle()])

# Every steering answer: the wave as it is now (as GET /rollouts/{id} reads it), or why not.
STEERED = {200: RolloutDetailOut, **errors(401, 403, 404, 409, 413, 422, 429)}


def _invalid(field: str, message: str) -> ValidationError:
    """A 422 naming a body field, as a schema refusal reads."""
    return ValidationError([{"loc": ["body", field], "msg": message}])


@router.get(
    "/rollouts",
    response={200: list[RolloutOut], **errors(401, 403, 422, 429)},
    summary="The customer's upgrade waves, newest first",
)
@paginate(KeysetPagination)
def list_rollouts(request: HttpRequest) -> QuerySet[Rollout]:
    return rollout_list(authed_key(request).customer_id)


@router.post(
    "/rollouts",
    auth=key_rollouts,
    response={201: RolloutDetailOut, **errors(401, 403, 409, 413, 422, 429)},
    summary="Start an upgrade wave to a release",
)
def start_rollout(request: HttpRequest, body: RolloutStartIn) -> Status[Rollout]:
    """The wave's agents are frozen now: the active agents behind the release (offline ones
    excluded, not failed). 409 `rollout_refused` while another wave is under way, for a
    yanked release, when an agent already runs a newer version (a wave never downgrades),
    when no online agent is behind the release, or for a canary not behind it."""
    customer = authed_key(request).customer
    releases = release_list_for(customer_channel(customer))
    release = releases.filter(version=body.release).first()
    if release is None:
        raise _invalid("release", f"No release {body.release} in your channel.")
    canary = None
    if body.canary_agent_id is not None:
        online = agent_search(customer, {"status": AgentStatus.ONLINE})
        canary = online.filter(pk=body.canary_agent_id).first()
        if canary is None:
            raise _invalid("canary_agent_id", "Not an online agent of yours.")
    rollout = rollout_start(
        customer=customer,
        release=release,
        actor=api_key_actor(request),
        reason=body.reason,
        scope=body.scope.model_dump() if body.scope else None,
        canary=canary,
        canary_soak=timedelta(hours=body.canary_soak_hours),
        batch_fraction=Decimal(body.batch_percent) / 100,
        batch_watch=timedelta(minutes=body.batch_watch_minutes),
        online_ratio_floor=Decimal(body.online_floor_percent) / 100,
        acceptance_drop_tolerance=Decimal(body.acceptance_drop_tolerance_percent) / 100,
        cost_increase_tolerance=Decimal(body.cost_increase_tolerance_percent) / 100,
    )
    return Status(201, rollout_get(customer, rollout.pk))


@router.get(
    "/rollouts/{rollout_id}",
    response={200: RolloutDetailOut, **errors(401, 403, 404, 422, 429)},
    summary="An upgrade wave: its state, each step's progress and the latest gate in words",
)
def get_rollout(request: HttpRequest, rollout_id: int) -> Rollout:
    return rollout_get(authed_key(request).customer_id, rollout_id)


def _steer(
    request: HttpRequest,
    rollout_id: int,
    service: Callable[..., object],
    reason: str,
    **extra: object,
) -> Rollout:
    """Call the portal's steering service for this customer's wave; what the wave's state
    does not allow is 409 `rollout_state`."""
    customer_id = authed_key(request).customer_id
    rollout = rollout_get(customer_id, rollout_id)
    service(rollout=rollout, actor=api_key_actor(request), reason=reason, **extra)
    return rollout_get(customer_id, rollout.pk)


@router.post(
    "/rollouts/{rollout_id}/pause",
    auth=key_rollouts,
    response=STEERED,
    summary="Pause a wave: nobody more is offered the version until it resumes",
)
def pause_rollout(request: HttpRequest, rollout_id: int, body: RolloutSteerIn) -> Rollout:
    return _steer(request, rollout_id, rollout_pause, body.reason)


@router.post(
    "/rollouts/{rollout_id}/resume",
    auth=key_rollouts,
    response=STEERED,
    summary="Resume a paused wave where it stopped; the gates run again before its next step",
)
def resume_rollout(request: HttpRequest, rollout_id: int, body: RolloutSteerIn) -> Rollout:
    return _steer(request, rollout_id, rollout_resume, body.reason)


@router.post(
    "/rollouts/{rollout_id}/resume-anyway",
    auth=key_rollouts,
    response=STEERED,
    summary="Resume a paused wave and waive the gates for its current step only",
)
def resume_rollout_anyway(request: HttpRequest, rollout_id: int, body: RolloutSteerIn) -> Rollout:
    """For when you have judged what the gate measured; the reason is audited and the next
    step is gated again."""
    return _steer(request, rollout_id, rollout_resume_anyway, body.reason)


@router.post(
    "/rollouts/{rollout_id}/set-floor",
    auth=key_rollouts,
    response=STEERED,
    summary="Change the share of the wave's agents that must be online for it to go on",
)
def set_rollout_floor(request: HttpRequest, rollout_id: int, body: RolloutFloorIn) -> Rollout:
    floor = Decimal(body.floor_percent) / 100
    return _steer(request, rollout_id, rollout_set_floor, body.reason, floor=floor)


@router.post(
    "/rollouts/{rollout_id}/skip-soak",
    auth=key_rollouts,
    response=STEERED,
    summary="End the current soak or watch now; the gates still run before the next step",
)
def skip_rollout_soak(request: HttpRequest, rollout_id: int, body: RolloutSteerIn) -> Rollout:
    return _steer(request, rollout_id, rollout_skip_soak, body.reason)


@router.post(
    "/rollouts/{rollout_id}/retry-failed",
    auth=key_rollouts,
    response=STEERED,
    summary="Offer the version again to the current step's agents that failed or rolled back",
)
def retry_failed_rollout_agents(
    request: HttpRequest, rollout_id: int, body: RolloutSteerIn
) -> Rollout:
    return _steer(request, rollout_id, rollout_retry_failed, body.reason)


@router.post(
    "/rollouts/{rollout_id}/abort",
    auth=key_rollouts,
    response=STEERED,
    summary="Abort a wave: agents not yet told stay on their version",
)
def abort_rollout(request: HttpRequest, rollout_id: int, body: RolloutSteerIn) -> Rollout:
    return _steer(request, rollout_id, rollout_abort, body.reason)
