"""Agent endpoints: activation (with a token), then everything with the agent's secret."""

from django.http import HttpRequest
from ninja import Router, Status

from fleet.agent_cache import fleet_size, jobs_pending
from fleet.api.auth import agent_auth, authed_agent
from fleet.api.schemas import (
    ActivateIn,
    ActivateOut,
    AgentMeOut,
    AnswerOut,
    ExitOut,
    HeartbeatIn,
    HeartbeatOut,
    LicenseLimitsOut,
    OkOut,
    ReleaseHintOut,
    SecretOut,
    UpgradeOrderOut,
    UpgradeResultIn,
    errors,
)
from fleet.api.throttles import ClientAddressThrottle
from fleet.choices import Channel
from fleet.errors import AgentGone
from fleet.http import client_address
from fleet.models import Agent, License
from fleet.models.agents import HELD, SEAT_HOLDING
from fleet.selectors import (
    UpgradeOrder,
    agent_channel,
    agent_latest_release,
    agent_upgrade_order,
    customer_active_agent_count,
    license_current,
    release_artifact_path,
)
from fleet.services.activation import MachineIdentity, agent_activate
from fleet.services.activity import ActivityReport
from fleet.services.agents import (
    agent_exit,
    agent_record_heartbeat,
    agent_record_upgrade_result,
    agent_rotate_secret,
    agent_update_available,
    heartbeat_interval,
)
from fleet.services.jobs import jobs_to_stop
from fleet.services.questions import answers_for
from fleet.versions import SemVer

router = Router(tags=["agents"])


def _hint(agent: Agent, version: SemVer) -> ReleaseHintOut | None:
    latest = agent_update_available(agent, version)
    if latest is None or agent.facts is None:
        return None
    return ReleaseHintOut(version=str(latest), channel=agent_channel(agent) or Channel.STABLE)


def _order(order: UpgradeOrder) -> UpgradeOrderOut:
    """A rollout's order, with the download when the release has an artifact (from the
    agent's cached facts: no query)."""
    download = bool(order.sha256)
    return UpgradeOrderOut(
        version=str(order.version),
        rollout_id=order.rollout_id,
        drain=True,
        sha256=order.sha256 if download else None,
        size=order.size if download else None,
        signature=order.signature if download else None,
        url=release_artifact_path(order.version) if download else None,
    )


def _limits(license: License, seats_used: int) -> LicenseLimitsOut:
    return LicenseLimitsOut(
        plan=license.plan,
        max_agents=license.max_agents,
        seats_used=seats_used,
        max_concurrent_tasks_per_agent=license.max_concurrent_tasks_per_agent,
        channel=license.channel,
    )


@router.post(
    "/agents/activate",
    auth=None,
    throttle=[ClientAddressThrottle()],
    response={200: ActivateOut, 201: ActivateOut, **errors(401, 403, 409, 410, 413, 422, 429)},
    summary="Redeem a single-use activation token",
)
def activate(request: HttpRequest, body: ActivateIn) -> Status[ActivateOut]:
    """The first machine to present a token gets an agent and its secret (201). The same
    caller retrying (the same machine, unit and `install_key`) within 15 minutes gets its
    agent back with a new secret (200); anyone else is refused with 409
    `token_already_redeemed`."""
    activation = agent_activate(
        token=body.token,
        machine=MachineIdentity(
            machine_id=body.machine_id,
            hostname=body.hostname,
            zone=body.zone,
            unit_name=body.unit_name,
            state_dir=body.state_dir,
            memory_mb=body.memory_mb,
            labels=body.labels,
        ),
        role=body.role,
        version=SemVer(body.version),
        name=body.name,
        install_key=body.install_key,
        ip_address=client_address(request),
    )
    out = ActivateOut(
        agent_id=activation.agent.pk,
        agent_secret=activation.secret,
        created=activation.created,
        heartbeat_interval_seconds=heartbeat_interval(fleet_size()),
        license=_limits(
            activation.license, customer_active_agent_count(activation.agent.customer_id)
        ),
    )
    return Status(201 if activation.created else 200, out)


@router.post(
    "/agents/heartbeat",
    auth=agent_auth,
    response={200: HeartbeatOut, **errors(401, 413, 422)},
    summary="Report that the agent is alive",
)
def heartbeat(request: HttpRequest, body: HeartbeatIn) -> HeartbeatOut:
    agent = authed_agent(request)
    version = SemVer(body.version)
    held = agent.status in HELD  # paused or draining: nothing to claim, no upgrade order
    order = None if held else agent_upgrade_order(agent)
    server_time = agent_record_heartbeat(
        agent=agent,
        version=version,
        running_job_ids=body.running_job_ids,
        load=body.load,
        sent_at=body.sent_at,
        ip_address=client_address(request),
        upgrading=order is not None,
        activity=ActivityReport(body.activity, body.provider, body.detail)
        if body.activity
        else None,
        usage={job_id: [u.dict() for u in items] for job_id, items in body.usage.items()},
    )
    return HeartbeatOut(
        server_time=server_time,
        next_heartbeat_seconds=heartbeat_interval(fleet_size()),
        jobs_pending=0 if held else jobs_pending(agent.customer_id, agent.role, agent.labels),
        paused=held,
        cancel=jobs_to_stop(agent),
        answers=[
            AnswerOut(question_id=q.pk, job_id=q.job_id, answer=q.answer)
            for q in answers_for(agent)
        ],
        update_available=_hint(agent, version),
        upgrade=_order(order) if order else None,
    )


@router.get(
    "/agents/me",
    auth=agent_auth,
    response={200: AgentMeOut, **errors(401)},
    summary="What `agentina status` shows",
)
def me(request: HttpRequest) -> AgentMeOut:
    agent = authed_agent(request)
    stored = Agent.objects.select_related("host").get(pk=agent.pk)  # status as of now
    if stored.status not in SEAT_HOLDING:
        raise AgentGone()
    license = license_current(agent.customer_id)
    host = stored.host
    return AgentMeOut(
        agent_id=agent.pk,
        name=agent.name,
        role=agent.role,
        status=stored.status,
        ephemeral=stored.ephemeral,
        labels=stored.labels,
        version=str(stored.version),
        unit_name=agent.unit_name,
        state_dir=agent.state_dir,
        host=host.hostname,
        machine_id=host.machine_id,
        zone=host.zone,
        last_heartbeat_at=stored.last_heartbeat_at,
        license=_limits(license, customer_active_agent_count(agent.customer_id))
        if license
        else None,
        latest_release=str(agent_latest_release(agent) or "") or None,
        update_available=_hint(agent, agent.version),
    )


@router.post(
    "/agents/exit",
    auth=agent_auth,
    response={200: ExitOut, **errors(401)},
    summary="Say the agent stops cleanly; an ephemeral agent is decommissioned",
)
def exit_cleanly(request: HttpRequest) -> ExitOut:
    return ExitOut(
        decommissioned=agent_exit(agent=authed_agent(request), ip_address=client_address(request))
    )


@router.post(
    "/agents/rotate-secret",
    auth=agent_auth,
    response={200: SecretOut, **errors(401)},
    summary="Replace the agent's secret; the old one stops working at once",
)
def rotate_secret(request: HttpRequest) -> SecretOut:
    agent = authed_agent(request)
    return SecretOut(
        agent_secret=agent_rotate_secret(agent=agent, ip_address=client_address(request))
    )


@router.post(
    "/agents/upgrade-result",
    auth=agent_auth,
    response={200: OkOut, **errors(401, 413, 422)},
    summary="Report how applying a version went",
)
def upgrade_result(request: HttpRequest, body: UpgradeResultIn) -> OkOut:
    agent_record_upgrade_result(
        agent=authed_agent(request),
        outcome=body.outcome,
        from_version=SemVer(body.from_version),
        to_version=SemVer(body.to_version),
        detail=body.detail,
        rolled_back_to=SemVer(body.rolled_back_to) if body.rolled_back_to else None,
        rollback_level=body.rollback_level,
        ip_address=client_address(request),
    )
    return OkOut(ok=True)
