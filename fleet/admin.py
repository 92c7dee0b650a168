"""Staff pages. Writes go through services (so each is audited); list pages select
their relations and annotate their counts so no page issues queries per row."""

from collections import Counter
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db import models
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join

from fleet.choices import (
    ACTIVE_ROLLOUT_STATES,
    RolloutState,
    RolloutTargetState,
    TokenStatus,
)
from fleet.errors import FleetError, InvalidLicense, InvalidVersion, LicenseBelowActiveAgents
from fleet.models import (
    ActivationToken,
    Agent,
    Anomaly,
    AuditEvent,
    Customer,
    CustomerApiKey,
    FleetSnapshot,
    Host,
    Job,
    License,
    Membership,
    Release,
    Rollout,
    RolloutTarget,
)
from fleet.models.agents import SEAT_HOLDING
from fleet.selectors import fleet_metrics, license_current
from fleet.services.agents import agent_decommission
from fleet.services.anomalies import anomalies_reopen, anomalies_resolve
from fleet.services.api_keys import api_key_revoke
from fleet.services.audit import SYSTEM, Actor
from fleet.services.customers import (
    customer_create,
    customer_update,
    membership_remove,
    membership_set,
)
from fleet.services.licenses import (
    LICENSE_EDITABLE,
    license_create,
    license_resume,
    license_suspend,
    license_update,
    license_validate,
)
from fleet.services.releases import (
    release_publish,
    release_update,
    release_version_parse,
    release_yank,
)
from fleet.services.rollouts import (
    rollout_abort,
    rollout_pause,
    rollout_plan,
    rollout_resume,
    rollout_retry_failed,
    rollout_skip_soak,
    rollout_start,
)
from fleet.services.tokens import token_revoke

admin.site.site_header = "Agentina Control Plane — staff"
admin.site.site_title = "Agentina staff"
admin.site.index_title = "Customers, licenses and every fleet"


def _adopt(obj: models.Model, saved: models.Model) -> None:
    """Point the admin's unsaved object at the row a service created."""
    obj.pk = saved.pk
    obj._state.adding = False
    obj._state.db = saved._state.db


def _active_agents_subquery(customer_ref: str) -> Coalesce:
    active = (
        Agent.objects.filter(customer=OuterRef(customer_ref))
        .holding_seat()
        .order_by()
        .values("customer")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(active), 0)


class NoDeleteAdmin(admin.ModelAdmin):
    """Rows here are history: suspend, yank or revoke instead of deleting (and unlike a
    delete, those are audited)."""

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_manage_permission(self, request: HttpRequest) -> bool:
        """Actions marked permissions=["manage"] need the model's change permission."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")


class ReadOnlyAdmin(NoDeleteAdmin):
    """Staff watch these; changes happen through the product (API, portal, services)
    and through the actions each page offers."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class FleetNumbersMixin(admin.ModelAdmin):
    """Shows the four numbers above the list: every fleet, or the customer filtered on."""

    change_list_template = "admin/fleet/change_list_numbers.html"
    customer_param = "customer__id__exact"

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        raw = request.GET.get(self.customer_param, "")
        customer = Customer.objects.filter(pk=int(raw)).first() if raw.isdigit() else None
        extra = {
            "fleet_numbers": fleet_metrics(customer),
            "fleet_scope": customer.name if customer else "every fleet",
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=extra)


class NoteForm(forms.Form):
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=2000)


def note_action(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    action: str,
    verb: str,
    apply: Any,
) -> Any:
    """An admin action that asks for a note first (who acted and why go to the audit log):
    shows the form, then calls apply(ids=..., note=..., actor=...) when it is filled in."""
    form = NoteForm(request.POST if "apply" in request.POST else None)
    if form.is_valid():
        done = apply(
            ids=list(queryset.values_list("pk", flat=True)),
            note=form.cleaned_data["note"],
            actor=Actor.from_request(request),
        )
        model_admin.message_user(request, f"{verb.capitalize()}: {done} of {queryset.count()}.")
        return None
    opts = queryset.model._meta
    return TemplateResponse(
        request,
        "admin/fleet/note_action.html",
        {
            **model_admin.admin_site.each_context(request),
            "title": f"{verb.capitalize()} {opts.verbose_name_plural}",
            "objects": list(queryset[:200]),
            "form": form,
            "action": action,
            "verb": verb,
        },
    )


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- customers, members, licenses -------------------------------------------------------


class MembershipForm(forms.ModelForm):
    """The member by username: a text field, so the page needs no query per member."""

    username = forms.CharField(max_length=150)

    class Meta:
        model = Membership
        fields = ["role"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["username"].initial = self.instance.user.get_username()

    def clean_username(self) -> Any:
        username = self.cleaned_data["username"]
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise forms.ValidationError(f"No user {username!r}: create the user first.")
        return user


class MembershipInline(admin.TabularInline):
    model = Membership
    form = MembershipForm
    extra = 1
    fields = ["username", "role", "created_at"]
    readonly_fields = ["created_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Membership]:
        return super().get_queryset(request).select_related("user", "customer")


class LicenseInline(ReadOnlyInline):
    model = License
    verbose_name_plural = "licenses (current first; edit on the license page)"
    fields = readonly_fields = (
        "is_current",
        "plan",
        "max_agents",
        "max_concurrent_tasks_per_agent",
        "channel",
        "valid_from",
        "valid_until",
        "suspended",
    )
    ordering = ["-is_current", "-created_at"]


@admin.register(Customer)
class CustomerAdmin(NoDeleteAdmin):
    list_display = ["name", "slug", "plan", "seats", "agents_active", "created_at"]
    search_fields = ["name", "slug", "contact_email"]
    prepopulated_fields = {"slug": ["name"]}
    date_hierarchy = "created_at"
    inlines = [MembershipInline, LicenseInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Customer]:
        current = License.objects.filter(customer=OuterRef("pk"), is_current=True)
        return (
            super()
            .get_queryset(request)
            .annotate(
                current_plan=Subquery(current.values("plan")[:1]),
                current_seats=Subquery(current.values("max_agents")[:1]),
                active_agents=_active_agents_subquery("pk"),
            )
        )

    @admin.display(description="plan", ordering="current_plan")
    def plan(self, obj: Any) -> str:
        return obj.current_plan or "— no license —"

    @admin.display(description="max agents", ordering="current_seats")
    def seats(self, obj: Any) -> int | None:
        return obj.current_seats

    @admin.display(description="active agents", ordering="active_agents")
    def agents_active(self, obj: Any) -> int:
        return obj.active_agents

    def save_model(self, request: HttpRequest, obj: Customer, form: Any, change: bool) -> None:
        if change:
            customer_update(customer=obj, actor=Actor.from_request(request))
        else:
            _adopt(
                obj,
                customer_create(
                    name=obj.name,
                    slug=obj.slug,
                    contact_email=obj.contact_email,
                    notes=obj.notes,
                    actor=Actor.from_request(request),
                ),
            )

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)
        # The admin's change message reads these; services do the writing below.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for member_form in formset.forms:
            if not member_form.has_changed() or not member_form.cleaned_data:
                continue
            deleted = member_form in formset.deleted_forms
            user = member_form.cleaned_data["username"]
            pk = member_form.instance.pk
            stored = Membership.objects.get(pk=pk) if pk else None
            if stored is not None and (deleted or stored.user_id != user.pk):
                membership_remove(membership=stored, actor=Actor.from_request(request))
            if not deleted:
                membership_set(
                    customer=form.instance,
                    user=user,
                    role=member_form.cleaned_data["role"],
                    actor=Actor.from_request(request),
                )
        return None


class LicenseAdminForm(forms.ModelForm):
    confirm_below_active = forms.BooleanField(
        required=False,
        label="Apply below the active agents",
        help_text="Needed only when max agents is lower than the customer's active agents: "
        "nobody is stopped, but no new agent can activate until the fleet is within the cap.",
    )

    class Meta:
        model = License
        fields = ["customer", *LICENSE_EDITABLE]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        customer = cleaned.get("customer") or self.instance.customer
        candidate = License(
            customer=customer,
            **{name: cleaned.get(name, getattr(self.instance, name)) for name in LICENSE_EDITABLE},
        )
        previous = self.instance if self.instance.pk else license_current(customer)
        try:
            license_validate(
                candidate,
                confirm_below_active=cleaned["confirm_below_active"],
                previous_max_agents=previous.max_agents if previous else None,
            )
        except LicenseBelowActiveAgents as exc:
            self.add_error("max_agents", exc.detail)
        except InvalidLicense as exc:
            self.add_error(exc.extra.get("field"), exc.detail)
        return cleaned


@admin.register(License)
class LicenseAdmin(NoDeleteAdmin):
    form = LicenseAdminForm
    list_display = [
        "customer",
        "plan",
        "max_agents",
        "agents_active",
        "max_concurrent_tasks_per_agent",
        "channel",
        "valid_from",
        "valid_until",
        "suspended",
        "is_current",
    ]
    list_filter = ["is_current", "suspended", "channel", "plan", "customer"]
    list_select_related = ["customer"]
    search_fields = ["customer__name", "plan"]
    date_hierarchy = "valid_from"
    readonly_fields = ["is_current", "suspended", "suspended_reason", "created_at"]
    actions = ["suspend", "resume"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[License]:
        return (
            super()
            .get_queryset(request)
            .annotate(active_agents=_active_agents_subquery("customer"))
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*self.readonly_fields, "customer"] if obj else list(self.readonly_fields)

    @admin.display(description="active agents", ordering="active_agents")
    def agents_active(self, obj: Any) -> int:
        return obj.active_agents

    def save_model(self, request: HttpRequest, obj: License, form: Any, change: bool) -> None:
        confirm = form.cleaned_data.get("confirm_below_active", False)
        if change:
            license_update(
                license=obj, actor=Actor.from_request(request), confirm_below_active=confirm
            )
        else:
            license_create(
                license=obj, actor=Actor.from_request(request), confirm_below_active=confirm
            )

    @admin.action(description="Suspend: no new agents can activate", permissions=["change"])
    def suspend(self, request: HttpRequest, queryset: QuerySet[License]) -> None:
        for lic in queryset:
            license_suspend(
                license=lic,
                reason=f"suspended by {request.user}",
                actor=Actor.from_request(request),
            )
        self.message_user(request, f"Suspended {queryset.count()} license(s).")

    @admin.action(description="Resume suspended licenses", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[License]) -> None:
        for lic in queryset:
            license_resume(license=lic, actor=Actor.from_request(request))
        self.message_user(request, f"Resumed {queryset.count()} license(s).")


# --- releases ---------------------------------------------------------------------------


class ReleaseAdminForm(forms.ModelForm):
    class Meta:
        model = Release
        fields = ["version", "channel", "notes"]

    def clean_version(self) -> str:
        try:
            return release_version_parse(self.cleaned_data["version"])
        except InvalidVersion as exc:
            raise forms.ValidationError(exc.detail) from exc


@admin.register(Release)
class ReleaseAdmin(NoDeleteAdmin):
    form = ReleaseAdminForm
    list_display = ["version", "channel", "published_at", "yanked", "agents_on_it"]
    list_filter = ["channel", "yanked"]
    search_fields = ["version", "notes"]
    date_hierarchy = "published_at"
    actions = ["yank"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Release]:
        on_it = (
            Agent.objects.filter(version=OuterRef("version"))
            .holding_seat()
            .order_by()
            .values("version")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return super().get_queryset(request).annotate(agents_on=Coalesce(Subquery(on_it), 0))

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["version", "channel", "notes"]
        return [
            "version",
            "channel",
            "published_at",
            "notes",
            "yanked",
            "yanked_at",
            "yanked_reason",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return ["version", "channel", "published_at", "yanked", "yanked_at", "yanked_reason"]

    @admin.display(description="agents on it", ordering="agents_on")
    def agents_on_it(self, obj: Any) -> int:
        return obj.agents_on

    def save_model(self, request: HttpRequest, obj: Release, form: Any, change: bool) -> None:
        if change:
            release_update(release=obj, actor=Actor.from_request(request))
            return
        _adopt(
            obj,
            release_publish(
                version=obj.version,
                channel=obj.channel,
                notes=obj.notes,
                actor=Actor.from_request(request),
            ),
        )

    @admin.action(description="Yank: never offer these as latest again", permissions=["change"])
    def yank(self, request: HttpRequest, queryset: QuerySet[Release]) -> None:
        for release in queryset:
            release_yank(
                release=release,
                reason=f"yanked by {request.user}",
                actor=Actor.from_request(request),
            )
        self.message_user(request, f"Yanked {queryset.count()} release(s).")


# --- fleet (read-mostly) ----------------------------------------------------------------


class TokenStateFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(TokenStatus.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
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
        revoked = sum(token_revoke(token=t, actor=Actor.from_request(request)) for t in queryset)
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
        actor = Actor.from_request(request)
        revoked = sum(api_key_revoke(key=key, actor=actor) for key in queryset)
        self.message_user(request, f"Revoked {revoked} key(s).")


@admin.register(Host)
class HostAdmin(ReadOnlyAdmin):
    list_display = ["hostname", "customer", "zone", "memory_mb", "agent_count", "created_at"]
    list_filter = ["zone", "customer"]
    list_select_related = ["customer"]
    search_fields = ["hostname", "machine_id", "customer__name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Host]:
        return (
            super()
            .get_queryset(request)
            .annotate(n_agents=Count("agents", filter=Q(agents__status__in=SEAT_HOLDING)))
        )

    @admin.display(description="agents", ordering="n_agents")
    def agent_count(self, obj: Any) -> int:
        return obj.n_agents


@admin.register(Agent)
class AgentAdmin(FleetNumbersMixin, ReadOnlyAdmin):
    list_display = [
        "name",
        "customer",
        "role",
        "status",
        "version",
        "host",
        "zone",
        "last_heartbeat_at",
        "registered_at",
    ]
    list_filter = ["status", "role", "host__zone", "version", "customer"]
    list_select_related = ["customer", "host"]
    search_fields = ["name", "unit_name", "host__hostname", "host__machine_id", "customer__name"]
    date_hierarchy = "registered_at"
    exclude = ["secret_digest"]
    actions = ["decommission"]

    @admin.action(
        description="Decommission: revoke the secret, free the seat, requeue jobs",
        permissions=["manage"],
    )
    def decommission(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        actor = Actor.from_request(request)
        done = sum(agent_decommission(agent=agent, actor=actor) for agent in queryset)
        self.message_user(request, f"Decommissioned {done} agent(s).")

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
    date_hierarchy = "queued_at"


class AnomalyOpenFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "Unresolved"), ("resolved", "Resolved")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
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
    def resolve(self, request: HttpRequest, queryset: QuerySet[Anomaly]) -> Any:
        def apply(*, ids: list[int], note: str, actor: Actor) -> int:
            return anomalies_resolve(where=Q(pk__in=ids), note=note, actor=actor)

        return note_action(self, request, queryset, "resolve", "resolve", apply)

    @admin.action(description="Reopen with a note", permissions=["manage"])
    def reopen(self, request: HttpRequest, queryset: QuerySet[Anomaly]) -> Any:
        return note_action(self, request, queryset, "reopen", "reopen", anomalies_reopen)

    @admin.display(description="message")
    def short_message(self, obj: Anomaly) -> str:
        return obj.message if len(obj.message) <= 90 else obj.message[:89] + "…"


class RolloutTargetInline(ReadOnlyInline):
    model = RolloutTarget
    fields = readonly_fields = (
        "agent",
        "batch",
        "state",
        "from_version",
        "offered_at",
        "reported_at",
        "detail",
    )
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[RolloutTarget]:
        return super().get_queryset(request).select_related("agent")


class RolloutStartForm(forms.ModelForm):
    reason = forms.CharField(max_length=500, help_text="Why this wave, for the audit log.")
    actor: Actor = SYSTEM  # set per request by RolloutAdmin.get_form

    class Meta:
        model = Rollout
        fields = [
            "customer",
            "release",
            "canary_agent",
            "canary_soak",
            "batch_fraction",
            "batch_watch",
            "agent_deadline",
            "throughput_drop_tolerance",
            "online_ratio_floor",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        try:
            rollout_plan(
                customer=cleaned["customer"],
                release=cleaned["release"],
                actor=self.actor,
                canary=cleaned.get("canary_agent"),
                batch_fraction=cleaned["batch_fraction"],
            )
        except FleetError as exc:
            field = exc.extra.get("field")
            self.add_error(field if field in self.fields else None, exc.detail)
        return cleaned


@admin.register(Rollout)
class RolloutAdmin(NoDeleteAdmin):
    """Waves: start one (planned and checked first), watch its batches and gates, steer it."""

    list_display = [
        "id",
        "customer",
        "target_version",
        "state",
        "step",
        "progress",
        "started_at",
        "finished_at",
    ]
    list_filter = ["state", "customer"]
    list_select_related = ["customer", "release"]
    search_fields = ["customer__name", "release__version"]
    date_hierarchy = "created_at"
    readonly_fields = ["batches", "gate", "paused_reason"]
    actions = ["pause", "resume", "abort", "skip_soak", "retry_failed"]
    raw_id_fields = ["canary_agent"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Rollout]:
        done = Q(targets__state=RolloutTargetState.SUCCEEDED)
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_targets=Count("targets", filter=~Q(targets__state=RolloutTargetState.EXCLUDED)),
                n_done=Count("targets", filter=done),
            )
        )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request)  # actions, not edits

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is not None:
            return super().get_form(request, obj, change, **kwargs)
        form = super().get_form(request, obj, change, form=RolloutStartForm, **kwargs)
        return type("RolloutStartFormFor", (form,), {"actor": Actor.from_request(request)})

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return [*RolloutStartForm.Meta.fields, "reason"]
        return [
            "customer",
            "release",
            "state",
            "paused_reason",
            "batches",
            "gate",
            "canary_soak",
            "batch_watch",
            "throughput_drop_tolerance",
            "online_ratio_floor",
            "started_at",
            "finished_at",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [] if obj is None else self.get_fields(request, obj)

    def save_model(self, request: HttpRequest, obj: Rollout, form: Any, change: bool) -> None:
        data = form.cleaned_data
        _adopt(
            obj,
            rollout_start(
                customer=data["customer"],
                release=data["release"],
                actor=Actor.from_request(request),
                reason=data["reason"],
                canary=data.get("canary_agent"),
                batch_fraction=data["batch_fraction"],
                canary_soak=data["canary_soak"],
                batch_watch=data["batch_watch"],
                throughput_drop_tolerance=data["throughput_drop_tolerance"],
                online_ratio_floor=data["online_ratio_floor"],
            ),
        )

    @admin.display(description="version", ordering="release__version")
    def target_version(self, obj: Rollout) -> str:
        return str(obj.release.version)

    @admin.display(description="step")
    def step(self, obj: Rollout) -> str:
        if obj.state in (RolloutState.COMPLETED, RolloutState.ABORTED, RolloutState.DRAFT):
            return "—"
        return (
            "canary"
            if obj.current_batch == 0
            else f"batch {obj.current_batch} of {obj.batches_total}"
        )

    @admin.display(description="upgraded")
    def progress(self, obj: Any) -> str:
        return format_html(
            '<progress max="{}" value="{}"></progress> {}/{}',
            obj.n_targets or 1,
            obj.n_done,
            obj.n_done,
            obj.n_targets,
        )

    @admin.display(description="batches")
    def batches(self, obj: Rollout) -> str:
        rows = (
            RolloutTarget.objects.filter(rollout=obj)
            .values("batch", "state")
            .annotate(n=Count("pk"))
            .order_by("batch")
        )
        per_batch: dict[Any, Counter[str]] = {}
        for row in rows:
            per_batch.setdefault(row["batch"], Counter())[row["state"]] = row["n"]
        lines = []
        for batch, states in per_batch.items():
            total = sum(states.values())
            label = "excluded" if batch is None else ("canary" if batch == 0 else f"batch {batch}")
            current = (
                " ◀" if batch == obj.current_batch and obj.state in ACTIVE_ROLLOUT_STATES else ""
            )
            lines.append(
                format_html(
                    "<tr><td>{}{}</td>"
                    '<td><progress max="{}" value="{}" style="width:12rem"></progress></td>'
                    "<td>{}</td></tr>",
                    label,
                    current,
                    total,
                    states.get(RolloutTargetState.SUCCEEDED, 0),
                    ", ".join(f"{n} {state}" for state, n in sorted(states.items())),
                )
            )
        return format_html(
            "<table>{}</table>", format_html_join("", "{}", ((line,) for line in lines))
        )

    @admin.display(description="latest gate")
    def gate(self, obj: Rollout) -> str:
        if not obj.last_gate:
            return "No gate has run yet."
        return format_html_join(
            "", "<div><b>{}</b>: {}</div>", ((k, v) for k, v in sorted(obj.last_gate.items()))
        )

    def _steer(
        self,
        request: HttpRequest,
        queryset: QuerySet[Rollout],
        action: str,
        verb: str,
        service: Any,
    ) -> Any:
        def apply(*, ids: list[int], note: str, actor: Actor) -> int:
            done = 0
            for rollout in Rollout.objects.filter(pk__in=ids):
                try:
                    service(rollout=rollout, actor=actor, reason=note)
                    done += 1
                except FleetError as exc:
                    self.message_user(request, f"{rollout}: {exc.detail}", messages.WARNING)
            return done

        return note_action(self, request, queryset, action, verb, apply)

    @admin.action(description="Pause with a reason", permissions=["manage"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> Any:
        return self._steer(request, queryset, "pause", "pause", rollout_pause)

    @admin.action(description="Resume with a reason", permissions=["manage"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> Any:
        return self._steer(request, queryset, "resume", "resume", rollout_resume)

    @admin.action(description="Abort with a reason", permissions=["manage"])
    def abort(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> Any:
        return self._steer(request, queryset, "abort", "abort", rollout_abort)

    @admin.action(description="Skip the rest of the soak", permissions=["manage"])
    def skip_soak(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> Any:
        return self._steer(request, queryset, "skip_soak", "skip the soak of", rollout_skip_soak)

    @admin.action(description="Retry failed agents", permissions=["manage"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> Any:
        return self._steer(
            request, queryset, "retry_failed", "retry failed agents of", rollout_retry_failed
        )


@admin.register(FleetSnapshot)
class FleetSnapshotAdmin(ReadOnlyAdmin):
    list_display = [
        "taken_at",
        "customer",
        "agents_total",
        "agents_online",
        "online_ratio",
        "jobs_completed_last_hour",
        "queue_depth",
        "idle_ratio",
        "anomalies_unresolved",
        "agents_not_on_latest",
        "agents_minor_behind",
    ]
    list_filter = ["customer"]
    list_select_related = ["customer"]
    date_hierarchy = "taken_at"


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = [
        "at",
        "actor_label",
        "customer",
        "action",
        "target_type",
        "target_repr",
        "ip_address",
    ]
    list_filter = ["action", "target_type", "customer"]
    list_select_related = ["customer"]
    search_fields = ["actor_label", "action", "target_repr", "target_id"]
    date_hierarchy = "at"
