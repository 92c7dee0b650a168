"""Customer automation with an API key: activation tokens, agent controls, hosts, findings
and the fleet's numbers."""

from datetime import timedelta

from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from ninja.pagination import paginate

from fleet.api.auth import authed_key, key_agents, key_read, key_settings, key_tokens
from fleet.api.pagination import BoundedPagination, KeysetPagination
from fleet.api.schemas import (
    AgentFilters,
    AgentLabelsIn,
    AgentOut,
    AgentPauseIn,
    AgentUpdatePinIn,
    BulkActionIn,
    BulkActionOut,
    CustomerSettingsIn,
    CustomerSettingsOut,
    FleetMetricsOut,
    FleetQualityOut,
    HostFilters,
    HostOut,
    MintedTokenOut,
    QualityFilters,
    SeatsOut,
    TokenOut,
    TokensMintedOut,
    TokensMintIn,
    errors,
)
from fleet.api.throttles import ApiKeyThrottle
from fleet.choices import TokenStatus
from fleet.errors import TokenNotOutstanding
from fleet.http import client_address
from fleet.models import ActivationToken, Agent, BulkAction, Customer, Host
from fleet.selectors import (
    FleetQuality,
    agent_get,
    agent_search,
    bulk_action_get,
    fleet_metrics,
    fleet_quality,
    host_list,
    license_seats,
    token_get,
    token_list,
)
from fleet.selectors.outcomes import fleet_quality_headline
from fleet.services.agent_controls import (
    agent_labels_set,
    agent_pause,
    agent_resume,
    agent_update_pin_set,
)
from fleet.services.audit import Actor
from fleet.services.bulk import bulk_action_start
from fleet.services.customers import (
    customer_maintenance_window_set,
    customer_settings_set,
    customer_update_pins_set,
)
from fleet.services.tokens import token_revoke, tokens_mint_for_seats

# Reads take the `read` scope; each write names its own.
router = Router(tags=["customer automation"], auth=key_read, throttle=[ApiKeyThrottle()])


def api_key_actor(request: HttpRequest) -> Actor:
    return Actor.for_api_key(authed_key(request), client_address(request))


class TokenFilter(Schema):
    status: TokenStatus | None = None


@router.post(
    "/tokens",
    auth=key_tokens,
    response={201: TokensMintedOut, **errors(401, 403, 409, 413, 422, 429)},
    summary="Mint activation tokens, one per intended agent",
)
def mint_tokens(request: HttpRequest, body: TokensMintIn) -> Status[TokensMintedOut]:
    """Each secret appears in this response only. Refused with 403 `license_full` when the
    license has fewer free seats than tokens asked for; outstanding tokens reserve nothing,
    but past twice the seats of them outstanding a mint is 409 `token_limit_reached`."""
    customer = authed_key(request).customer
    minted = tokens_mint_for_seats(
        customer=customer,
        count=body.count,
        role=body.role or "",
        expires_in=timedelta(hours=body.expires_in_hours),
        note=body.note,
        ephemeral=body.ephemeral,
        labels=body.labels,
        actor=api_key_actor(request),
    )
    return Status(
        201,
        TokensMintedOut(
            tokens=[
                MintedTokenOut(token=secret, details=TokenOut.from_orm(token))
                for token, secret in minted
            ],
            seats=SeatsOut(**license_seats(customer).as_dict()),
        ),
    )


@router.get(
    "/tokens",
    response={200: list[TokenOut], **errors(401, 403, 422, 429)},
    summary="The customer's activation tokens, newest first",
)
@paginate(BoundedPagination)
def list_tokens(request: HttpRequest, filters: Query[TokenFilter]) -> QuerySet[ActivationToken]:
    return token_list(authed_key(request).customer_id, filters.status)


@router.delete(
    "/tokens/{token_id}",
    auth=key_tokens,
    response={200: TokenOut, **errors(401, 403, 404, 409, 422, 429)},
    summary="Revoke an outstanding token (idempotent)",
)
def revoke_token(request: HttpRequest, token_id: int) -> ActivationToken:
    token = token_get(authed_key(request).customer_id, token_id)
    token_revoke(token=token, actor=api_key_actor(request))
    token.refresh_from_db()
    if token.status != TokenStatus.REVOKED:
        raise TokenNotOutstanding(
            f"The token is {token.status}; only an outstanding token can be revoked."
        )
    return token


@router.get(
    "/fleet/metrics",
    response={200: FleetMetricsOut, **errors(401, 403, 429)},
    summary="The five numbers: online ratio, throughput, anomalies, version skew, acceptance",
)
def metrics(request: HttpRequest) -> dict:
    customer_id = authed_key(request).customer_id
    return {**fleet_metrics(customer_id).as_dict(), **fleet_quality_headline(customer_id)}


@router.get(
    "/fleet/quality",
    response={200: FleetQualityOut, **errors(401, 403, 422, 429)},
    summary="Acceptance, cost and tokens per role, version and agent; the costliest jobs",
)
def quality(request: HttpRequest, filters: Query[QualityFilters]) -> FleetQuality:
    """Jobs finished in the last `days` (each judged by its latest verdict so far) against
    the `days` before; cost per accepted job is what the jobs cost ÷ those accepted."""
    return fleet_quality(authed_key(request).customer_id, days=filters.days)


@router.get(
    "/settings",
    response={200: CustomerSettingsOut, **errors(401, 403, 429)},
    summary="The customer's fleet policies: stale cleanup, default job max runtime, "
    "maintenance window",
)
def get_settings(request: HttpRequest) -> Customer:
    return authed_key(request).customer


@router.patch(
    "/settings",
    auth=key_settings,
    response={200: CustomerSettingsOut, **errors(401, 403, 413, 422, 429)},
    summary="Change the customer's fleet policies (audited)",
)
def patch_settings(request: HttpRequest, body: CustomerSettingsIn) -> Customer:
    """Turning the stale cleanup on (or changing its days) acts a day later, so the portal
    lists the agents it will clean up first."""
    customer = Customer.objects.get(pk=authed_key(request).customer_id)
    sent = body.model_fields_set
    with transaction.atomic():  # all of it or, refused, nothing
        window = {"time_zone", "maintenance_days", "maintenance_start", "maintenance_end"}
        if sent & window:
            customer_maintenance_window_set(
                customer=customer,
                time_zone=body.time_zone if body.time_zone is not None else customer.time_zone,
                days=body.maintenance_days
                if "maintenance_days" in sent and body.maintenance_days is not None
                else customer.maintenance_days,
                start=body.maintenance_start
                if "maintenance_start" in sent
                else customer.maintenance_start,
                end=body.maintenance_end if "maintenance_end" in sent else customer.maintenance_end,
                actor=api_key_actor(request),
            )
        if "update_pins" in sent:
            customer_update_pins_set(
                customer=customer,
                rules=[rule.model_dump() for rule in body.update_pins or []],
                actor=api_key_actor(request),
            )
        customer_settings_set(
            customer=customer,
            stale_cleanup_days=body.stale_cleanup_days
            if "stale_cleanup_days" in sent
            else customer.stale_cleanup_days,
            job_max_runtime_seconds=body.job_max_runtime_seconds
            if "job_max_runtime_seconds" in sent
            else customer.job_max_runtime_seconds,
            actor=api_key_actor(request),
        )
    return customer


@router.get(
    "/agents",
    response={200: list[AgentOut], **errors(401, 403, 422, 429)},
    summary="The customer's agents matching the Agents page's filters, newest first",
)
@paginate(KeysetPagination)
def list_agents(request: HttpRequest, filters: Query[AgentFilters]) -> QuerySet[Agent]:
    """Without a status filter: every agent holding a seat (decommissioned and cleaned-up
    agents only when asked for by status)."""
    return agent_search(authed_key(request).customer_id, filters.as_dict())


@router.post(
    "/agents/bulk",
    auth=key_agents,
    response={202: BulkActionOut, **errors(401, 403, 409, 413, 422, 429)},
    summary="Pause, resume, decommission or label every agent matching filters",
)
def start_bulk_action(request: HttpRequest, body: BulkActionIn) -> Status[BulkAction]:
    """The agents the filters match now are listed, then a worker goes through them in
    chunks (watch `GET /agents/bulk/{id}`); audited once, with the count, when done. A
    pause without a reason, or labels without any, is 409 `agent_state_conflict`."""
    key = authed_key(request)
    action = bulk_action_start(
        customer=key.customer,
        kind=body.action,
        filters=body.filters.as_dict() if body.filters else {},
        params={"reason": body.reason, "labels": body.labels},
        actor=api_key_actor(request),
    )
    return Status(202, action)


@router.get(
    "/agents/bulk/{action_id}",
    response={200: BulkActionOut, **errors(401, 403, 404, 422, 429)},
    summary="A bulk action's progress",
)
def get_bulk_action(request: HttpRequest, action_id: int) -> BulkAction:
    return bulk_action_get(authed_key(request).customer_id, action_id)


@router.post(
    "/agents/{agent_id}/pause",
    auth=key_agents,
    response={200: AgentOut, **errors(401, 403, 404, 409, 413, 422, 429)},
    summary="Pause (or drain) an agent: it finishes its running jobs and claims nothing",
)
def pause_agent(request: HttpRequest, agent_id: int, body: AgentPauseIn) -> Agent:
    """With `drain`, the agent is `draining` while its running jobs finish, then `paused`.
    Pausing a paused agent again replaces its reason and timeout; an upgrading or
    decommissioned agent is 409 `agent_state_conflict`."""
    agent = agent_get(authed_key(request).customer_id, agent_id)
    agent_pause(
        agent=agent,
        reason=body.reason,
        timeout=timedelta(minutes=body.timeout_minutes) if body.timeout_minutes else None,
        drain=body.drain,
        actor=api_key_actor(request),
    )
    return agent_get(agent.customer_id, agent.pk)


@router.put(
    "/agents/{agent_id}/labels",
    auth=key_agents,
    response={200: AgentOut, **errors(401, 403, 404, 413, 422, 429)},
    summary="Replace an agent's labels (what label-routed jobs it may claim)",
)
def set_agent_labels(request: HttpRequest, agent_id: int, body: AgentLabelsIn) -> Agent:
    agent = agent_get(authed_key(request).customer_id, agent_id)
    agent_labels_set(agent=agent, labels=body.labels, actor=api_key_actor(request))
    return agent_get(agent.customer_id, agent.pk)


@router.put(
    "/agents/{agent_id}/update-pin",
    auth=key_agents,
    response={200: AgentOut, **errors(401, 403, 404, 409, 413, 422, 429)},
    summary="Pin an agent to an update channel or an exact release (null lifts a pin)",
)
def set_agent_update_pin(request: HttpRequest, agent_id: int, body: AgentUpdatePinIn) -> Agent:
    """The agent's heartbeat `update_available` follows the pin at once; a wave to another
    version leaves a version-pinned agent out. 422 `invalid_version` for a version that
    is not published (or is yanked)."""
    agent = agent_get(authed_key(request).customer_id, agent_id)
    agent_update_pin_set(
        agent=agent,
        channel=body.channel or "",
        version=body.version,
        actor=api_key_actor(request),
    )
    return agent_get(agent.customer_id, agent.pk)


@router.post(
    "/agents/{agent_id}/resume",
    auth=key_agents,
    response={200: AgentOut, **errors(401, 403, 404, 422, 429)},
    summary="Resume a paused or draining agent (idempotent)",
)
def resume_agent(request: HttpRequest, agent_id: int) -> Agent:
    agent = agent_get(authed_key(request).customer_id, agent_id)
    agent_resume(agent=agent, actor=api_key_actor(request))
    return agent_get(agent.customer_id, agent.pk)


@router.get(
    "/hosts",
    response={200: list[HostOut], **errors(401, 403, 422, 429)},
    summary="The customer's hosts with their agents counted, newest first",
)
@paginate(KeysetPagination)
def list_hosts(request: HttpRequest, filters: Query[HostFilters]) -> QuerySet[Host]:
    """As the Hosts page shows them: agents holding a seat, testers and online agents on
    each, and the memory they want against the host's own."""
    return host_list(authed_key(request).customer_id, label=filters.label, zone=filters.zone)
