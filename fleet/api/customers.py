"""Customer automation with an API key: activation tokens, agent controls and the fleet's
numbers."""

from datetime import timedelta

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from ninja.pagination import LimitOffsetPagination, paginate
from pydantic import Field

from fleet.api.auth import api_key_auth, authed_key
from fleet.api.schemas import (
    AgentLabelsIn,
    AgentOut,
    AgentPauseIn,
    FleetMetricsOut,
    MintedTokenOut,
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
from fleet.models import ActivationToken, Agent
from fleet.selectors import agent_get, fleet_metrics, license_seats, token_get, token_list
from fleet.services.agent_controls import agent_labels_set, agent_pause, agent_resume
from fleet.services.audit import Actor
from fleet.services.tokens import token_revoke, tokens_mint_for_seats

router = Router(tags=["customer automation"], auth=api_key_auth, throttle=[ApiKeyThrottle()])


def api_key_actor(request: HttpRequest) -> Actor:
    return Actor.for_api_key(authed_key(request), client_address(request))


class BoundedPagination(LimitOffsetPagination):
    """Limit and offset both bounded, so a huge offset is a 422, not a 500."""

    class Input(Schema):
        limit: int = Field(50, ge=1, le=200)
        offset: int = Field(0, ge=0, le=1_000_000)


class TokenFilter(Schema):
    status: TokenStatus | None = None


@router.post(
    "/tokens",
    response={201: TokensMintedOut, **errors(401, 403, 413, 422, 429)},
    summary="Mint activation tokens, one per intended agent",
)
def mint_tokens(request: HttpRequest, body: TokensMintIn) -> Status[TokensMintedOut]:
    """Each secret appears in this response only. Refused with 403 `license_full` when the
    license has fewer free seats than tokens asked for; outstanding tokens reserve nothing."""
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
    response={200: list[TokenOut], **errors(401, 422, 429)},
    summary="The customer's activation tokens, newest first",
)
@paginate(BoundedPagination)
def list_tokens(request: HttpRequest, filters: Query[TokenFilter]) -> QuerySet[ActivationToken]:
    return token_list(authed_key(request).customer_id, filters.status)


@router.delete(
    "/tokens/{token_id}",
    response={200: TokenOut, **errors(401, 404, 409, 422, 429)},
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
    response={200: FleetMetricsOut, **errors(401, 429)},
    summary="The four numbers: online ratio, throughput, anomalies, version skew",
)
def metrics(request: HttpRequest) -> dict:
    return fleet_metrics(authed_key(request).customer_id).as_dict()


@router.post(
    "/agents/{agent_id}/pause",
    response={200: AgentOut, **errors(401, 404, 409, 413, 422, 429)},
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
    response={200: AgentOut, **errors(401, 404, 413, 422, 429)},
    summary="Replace an agent's labels (what label-routed jobs it may claim)",
)
def set_agent_labels(request: HttpRequest, agent_id: int, body: AgentLabelsIn) -> Agent:
    agent = agent_get(authed_key(request).customer_id, agent_id)
    agent_labels_set(agent=agent, labels=body.labels, actor=api_key_actor(request))
    return agent_get(agent.customer_id, agent.pk)


@router.post(
    "/agents/{agent_id}/resume",
    response={200: AgentOut, **errors(401, 404, 422, 429)},
    summary="Resume a paused or draining agent (idempotent)",
)
def resume_agent(request: HttpRequest, agent_id: int) -> Agent:
    agent = agent_get(authed_key(request).customer_id, agent_id)
    agent_resume(agent=agent, actor=api_key_actor(request))
    return agent_get(agent.customer_id, agent.pk)
