"""The fleet, read-mostly: activation tokens, API keys, hosts, agents, jobs and anomalies.
Staff watch these; the actions revoke, decommission or resolve through services."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from fleet.admin.base import FleetNumbersMixin, ReadOnlyAdmin, note_action
from fleet.choices import Channel, TokenStatus
from fleet.errors import AgentStateConflict, InvalidVersion
from fleet.http import request_actor
from fleet.models import ActivationToken, Agent, Anomaly, CustomerApiKey, Host, Job
from fleet.models.agents import SEAT_HOLDING
from fleet.paging import count_of
from fleet.services.agent_controls import agent_pause, agent_resume, agent_update_pin_set
from fleet.services.agents import agent_decommission
from fleet.services.anomalies import anomalies_reopen, anomalies_resolve
from fleet.services.api_keys import api_key_revoke
from fleet.services.audit import Actor
from fleet.services.tokens import token_revoke

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class HostColumns(TypedDict):
    n_agents: int


class TokenStateFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(TokenStatus.choices)

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[ActivationToken]
    ) -> QuerySet[ActivationToken]:
        return queryset.filter(status=self.value()) if self.value() else queryset


@admin.register(ActivationToken)
class ActivationTokenAdmin(ReadOnlyAdmin):
    list_display = [
        "display_prefix",
        "customer",
        "role",
        "status",
        "created_at",
        "expires_at",
        "redeemed_at",
        "redeemed_by",
        "refused_attempts",
    ]
    list_filter = [TokenStateFilter, "role", "customer"]
    list_select_related = ["customer", "agent", "agent__host"]
    search_fields = ["display_prefix", "customer__name", "note", "agent__host__hostname"]
    date_hierarchy = "created_at"
    exclude = ["digest"]  # even the digest stays out of sight
    actions = ["revoke"]

    @admin.display(description="redeemed by")
    def redeemed_by(self, obj: ActivationToken) -> str:
        agent = getattr(obj, "agent", None)
        return f"{agent.name} on {agent.host.hostname}" if agent else "—"

    @admin.action(description="Revoke outstanding tokens", permissions=["manage"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ActivationToken]) -> None:
        revoked = sum(token_revoke(token=t, actor=request_actor(request)) for t in queryset)
        self.message_user(request, f"Revoked {revoked} token(s); others were not outstanding.")


@admin.register(CustomerApiKey)
class CustomerApiKeyAdmin(ReadOnlyAdmin):
    list_display = [
        "name",
        "display_prefix",
        "customer",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["customer"]
    list_select_related = ["customer"]
    search_fields = ["name", "display_prefix", "customer__name"]
    exclude = ["digest"]
    actions = ["revoke"]

    @admin.action(description="Revoke: the keys stop working at once", permissions=["manage"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[CustomerApiKey]) -> None:
        actor = request_actor(request)
        revoked = sum(api_key_revoke(key=key, actor=actor) for key in queryset)
        self.message_user(request, f"Revoked {revoked} key(s).")


@admin.register(Host)
class HostAdmin(ReadOnlyAdmin):
    list_display = ["hostname", "customer", "zone", "memory_mb", "agent_count", "created_at"]
    list_filter = ["zone", "customer"]
    list_select_related = ["customer"]
    search_fields = ["hostname", "machine_id", "customer__name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Host]:
        seated = Agent.objects.filter(status__in=SEAT_HOLDING)
        return super().get_queryset(request).annotate(n_agents=count_of(seated, "host"))

    @admin.display(description="agents", ordering="n_agents")
    def agent_count(self, obj: WithAnnotations[Host, HostColumns]) -> int:
        return obj.n_agents


@admin.register(Agent)
class AgentAdmin(FleetNumbersMixin, ReadOnlyAdmin):
    list_display = [
        "name",
        "customer",
        "role",
        "status",
        "version",
        "update_pin",
        "host",
        "zone",
        "last_heartbeat_at",
        "registered_at",
    ]
    list_filter = ["status", "role", "host__zone", "version", "customer"]
    list_select_related = ["customer", "host"]
    search_fields = ["name", "unit_name", "host__hostname", "host__machine_id", "customer__name"]
    exclude = ["secret_digest"]
    actions = ["pause", "drain", "resume", "pin_updates", "decommission"]

    def _hold(self, request: HttpRequest, queryset: QuerySet[Agent], drain: bool) -> Any:
        def apply(*, ids: list[int], note: str, actor: Actor) -> int:
            done = 0
            for agent in Agent.objects.filter(pk__in=ids):
                try:
                    agent_pause(agent=agent, reason=note, drain=drain, actor=actor)
                    done += 1
                except AgentStateConflict:
                    pass  # upgrading or retired: counted as not done
            return done

        verb = "drain" if drain else "pause"
        return note_action(self, request, queryset, verb, verb, apply)

    @admin.action(
        description="Pause with a reason: they finish running jobs, claim nothing",
        permissions=["manage"],
    )
    def pause(self, request: HttpRequest, queryset: QuerySet[Agent]) -> TemplateResponse | None:
        return self._hold(request, queryset, drain=False)

    @admin.action(
        description="Drain with a reason: paused once their running jobs finish",
        permissions=["manage"],
    )
    def drain(self, request: HttpRequest, queryset: QuerySet[Agent]) -> TemplateResponse | None:
        return self._hold(request, queryset, drain=True)

    @admin.action(description="Resume: they claim jobs again", permissions=["manage"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        actor = request_actor(request)
        done = sum(agent_resume(agent=agent, actor=actor) for agent in queryset)
        self.message_user(request, f"Resumed {done} agent(s).")

    @admin.action(
        description="Decommission: revoke the secret, free the seat, requeue jobs",
        permissions=["manage"],
    )
    def decommission(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        actor = request_actor(request)
        done = sum(agent_decommission(agent=agent, actor=actor) for agent in queryset)
        self.message_user(request, f"Decommissioned {done} agent(s).")

    @admin.action(
        description="Pin updates: the note is a channel (stable, beta), a version, or none",
        permissions=["manage"],
    )
    def pin_updates(
        self, request: HttpRequest, queryset: QuerySet[Agent]
    ) -> TemplateResponse | None:
        def apply(*, ids: list[int], note: str, actor: Actor) -> int:
            words = note.split()
            channel = next((w for w in words if w in Channel.values), "")
            version = next((w for w in words if w not in Channel.values and w != "none"), None)
            done = 0
            for agent in Agent.objects.filter(pk__in=ids):
                try:
                    agent_update_pin_set(agent=agent, channel=channel, version=version, actor=actor)
                    done += 1
                except (InvalidVersion, AgentStateConflict) as exc:
                    self.message_user(request, f"{agent.name}: {exc}", messages.ERROR)
            return done

        return note_action(self, request, queryset, "pin_updates", "pin updates", apply)

    @admin.display(description="update pin")
    def update_pin(self, obj: Agent) -> str:
        return " ".join(filter(None, [obj.update_channel, str(obj.pinned_version or "")])) or "—"

    @admin.display(description="zone", ordering="host__zone")
    def zone(self, obj: Agent) -> str:
        return obj.host.zone or "—"


@admin.register(Job)
class JobAdmin(FleetNumbersMixin, ReadOnlyAdmin):
    list_display = [
        "id",
        "customer",
        "role",
        "status",
        "priority",
        "agent",
        "attempts",
        "queued_at",
        "started_at",
        "finished_at",
    ]
    list_filter = ["status", "role", "customer"]
    list_select_related = ["customer", "agent"]
    search_fields = ["=id", "agent__name", "customer__name"]
    # Newest first by id (the primary key, read backwards); a date drill-down would be a
    # DISTINCT over every job kept.
    ordering = ["-id"]


class AnomalyOpenFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "Unresolved"), ("resolved", "Resolved")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Anomaly]) -> QuerySet[Anomaly]:
        if self.value() == "open":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "resolved":
            return queryset.filter(resolved_at__isnull=False)
        return queryset


@admin.register(Anomaly)
class AnomalyAdmin(FleetNumbersMixin, ReadOnlyAdmin):
    list_display = [
        "kind",
        "severity",
        "customer",
        "agent",
        "short_message",
        "occurrences",
        "first_seen",
        "last_seen",
        "resolved_at",
    ]
    list_filter = [AnomalyOpenFilter, "kind", "severity", "customer"]
    list_select_related = ["customer", "agent"]
    search_fields = ["message", "fingerprint", "agent__name", "customer__name"]
    date_hierarchy = "last_seen"

    actions = ["resolve", "reopen"]

    @admin.action(description="Resolve with a note", permissions=["manage"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[Anomaly]) -> TemplateResponse | None:
        def apply(*, ids: list[int], note: str, actor: Actor) -> int:
            return anomalies_resolve(where=Q(pk__in=ids), note=note, actor=actor)

        return note_action(self, request, queryset, "resolve", "resolve", apply)

    @admin.action(description="Reopen with a note", permissions=["manage"])
    def reopen(self, request: HttpRequest, queryset: QuerySet[Anomaly]) -> TemplateResponse | None:
        return note_action(self, request, queryset, "reopen", "reopen", anomalies_reopen)

    @admin.display(description="message")
    def short_message(self, obj: Anomaly) -> str:
        return obj.message if len(obj.message) <= 90 else obj.message[:89] + "…"
