"""Upgrade waves: start one (planned and checked first), watch its batches and gates, and
steer it with a reason that goes to the audit log."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join

from fleet.admin.base import NoDeleteAdmin, ReadOnlyInline, note_action
from fleet.choices import ACTIVE_ROLLOUT_STATES
from fleet.errors import FleetError
from fleet.http import request_actor
from fleet.models import Rollout, RolloutTarget
from fleet.selectors import rollout_batches
from fleet.selectors.rollouts import with_target_counts
from fleet.services.audit import SYSTEM, Actor
from fleet.services.rollouts import (
    rollout_abort,
    rollout_pause,
    rollout_plan,
    rollout_resume,
    rollout_retry_failed,
    rollout_skip_soak,
    rollout_start,
)

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class RolloutColumns(TypedDict):
    n_targets: int
    n_done: int


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
    """Plans the wave while validating, so a refusal shows on the form before anything is
    saved. Only staff reach the admin and staff may steer any customer's wave, so the plan
    is checked as the Control Plane: the operator check passes for both alike, and
    `rollout_start` checks the staff member again when the wave is saved."""

    reason = forms.CharField(max_length=500, help_text="Why this wave, for the audit log.")

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
            "scope",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        try:
            rollout_plan(
                customer=cleaned["customer"],
                release=cleaned["release"],
                actor=SYSTEM,
                canary=cleaned.get("canary_agent"),
                batch_fraction=cleaned["batch_fraction"],
                scope=cleaned.get("scope") or {},
            )
        except FleetError as exc:
            field = exc.extra.get("field")
            self.add_error(field if field in self.fields else None, exc.detail)
        return cleaned


@admin.register(Rollout)
class RolloutAdmin(NoDeleteAdmin):
    """Waves: start one (planned and checked first), watch its batches and gates, steer it."""

    add_form = RolloutStartForm
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
        return with_target_counts(super().get_queryset(request))  # as the portal counts

    def has_change_permission(self, request: HttpRequest, obj: Rollout | None = None) -> bool:
        return obj is None and super().has_change_permission(request)  # actions, not edits

    def get_form(
        self, request: HttpRequest, obj: Rollout | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm]:
        """Starting a wave has its own form (as Django's UserAdmin has for adding a user)."""
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Rollout | None = None) -> tuple[str, ...]:
        if obj is None:
            return (*RolloutStartForm.Meta.fields, "reason")
        return (
            "customer",
            "release",
            "state",
            "paused_reason",
            "scope",
            "batches",
            "gate",
            "canary_soak",
            "batch_watch",
            "throughput_drop_tolerance",
            "online_ratio_floor",
            "started_at",
            "finished_at",
        )

    def get_readonly_fields(
        self, request: HttpRequest, obj: Rollout | None = None
    ) -> tuple[str, ...]:
        return () if obj is None else self.get_fields(request, obj)

    def save_model(
        self, request: HttpRequest, obj: Rollout, form: forms.ModelForm, change: bool
    ) -> None:
        data = form.cleaned_data
        started = rollout_start(
            customer=data["customer"],
            release=data["release"],
            actor=request_actor(request),
            reason=data["reason"],
            canary=data.get("canary_agent"),
            batch_fraction=data["batch_fraction"],
            canary_soak=data["canary_soak"],
            batch_watch=data["batch_watch"],
            throughput_drop_tolerance=data["throughput_drop_tolerance"],
            online_ratio_floor=data["online_ratio_floor"],
            scope=data.get("scope") or {},
        )
        # The admin goes on with `obj` (its log entry, the redirect): give it the row the
        # service created.
        obj.pk = started.pk

    @admin.display(description="version", ordering="release__version")
    def target_version(self, obj: Rollout) -> str:
        return str(obj.release.version)

    @admin.display(description="step")
    def step(self, obj: Rollout) -> str:
        if obj.state not in ACTIVE_ROLLOUT_STATES:
            return "—"
        return (
            "canary"
            if obj.current_batch == 0
            else f"batch {obj.current_batch} of {obj.batches_total}"
        )

    @admin.display(description="upgraded")
    def progress(self, obj: WithAnnotations[Rollout, RolloutColumns]) -> str:
        return format_html(
            '<progress max="{}" value="{}"></progress> {}/{}',
            obj.n_targets or 1,
            obj.n_done,
            obj.n_done,
            obj.n_targets,
        )

    @admin.display(description="batches")
    def batches(self, obj: Rollout) -> str:
        under_way = obj.state in ACTIVE_ROLLOUT_STATES
        rows = (
            format_html(
                "<tr><td>{}{}</td>"
                '<td><progress max="{}" value="{}" style="width:12rem"></progress></td>'
                "<td>{}</td></tr>",
                batch.label.lower(),
                " ◀" if under_way and batch.number == obj.current_batch else "",
                batch.total,
                batch.succeeded,
                ", ".join(f"{n} {state}" for state, n in sorted(batch.counts.items())),
            )
            for batch in rollout_batches(obj)
        )
        return format_html(
            "<table>{}</table>", format_html_join("", "{}", ((row,) for row in rows))
        )

    @admin.display(description="latest gate")
    def gate(self, obj: Rollout) -> str:
        checks = (obj.last_gate or {}).get("checks")
        if not checks:
            return "No gate has run yet."
        return format_html_join(
            "",
            "<div>{} <b>{}</b>: {}</div>",
            (("✓" if c["passed"] else "✗", c["name"], c["text"]) for c in checks),
        )

    def _steer(
        self,
        request: HttpRequest,
        queryset: QuerySet[Rollout],
        action: str,
        verb: str,
        service: Callable[..., object],
    ) -> TemplateResponse | None:
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
    def pause(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> TemplateResponse | None:
        return self._steer(request, queryset, "pause", "pause", rollout_pause)

    @admin.action(description="Resume with a reason", permissions=["manage"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> TemplateResponse | None:
        return self._steer(request, queryset, "resume", "resume", rollout_resume)

    @admin.action(description="Abort with a reason", permissions=["manage"])
    def abort(self, request: HttpRequest, queryset: QuerySet[Rollout]) -> TemplateResponse | None:
        return self._steer(request, queryset, "abort", "abort", rollout_abort)

    @admin.action(description="Skip the rest of the soak", permissions=["manage"])
    def skip_soak(
        self, request: HttpRequest, queryset: QuerySet[Rollout]
    ) -> TemplateResponse | None:
        return self._steer(request, queryset, "skip_soak", "skip the soak of", rollout_skip_soak)

    @admin.action(description="Retry failed agents", permissions=["manage"])
    def retry_failed(
        self, request: HttpRequest, queryset: QuerySet[Rollout]
    ) -> TemplateResponse | None:
        return self._steer(
            request, queryset, "retry_failed", "retry failed agents of", rollout_retry_failed
        )
