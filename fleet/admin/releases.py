"""Releases: publish a version (with its signed artifact), see how many agents run it,
yank it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict, cast

from django import forms
from django.contrib import admin
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest

from fleet.admin.base import NoDeleteAdmin
from fleet.errors import FleetError, InvalidVersion
from fleet.http import request_actor
from fleet.models import Agent, Release
from fleet.services.audit import Actor
from fleet.services.releases import (
    release_publish,
    release_update,
    release_version_parse,
    release_yank,
)

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class ReleaseColumns(TypedDict):
    agents_on: int


class ReleaseAdminForm(forms.ModelForm):
    """Adding a release publishes it through release_publish (the same checks as
    `manage.py release_publish`): its refusals are this form's errors."""

    artifact_file = forms.FileField(
        required=False,
        label="Artifact",
        help_text="The agent's archive (agentina-<version>.tar.gz); empty: a release "
        "without a download (its upgrade orders carry none).",
    )
    artifact_signature = forms.CharField(
        required=False,
        label="Signature",
        max_length=200,
        help_text="Base64 Ed25519 signature over the release statement, made with the "
        "private key whose public half is RELEASE_PUBLIC_KEY.",
    )
    actor: Actor | None = None
    published: Release | None = None

    class Meta:
        model = Release
        fields = ["version", "channel", "notes"]

    def clean_version(self) -> str:
        try:
            return release_version_parse(self.cleaned_data["version"])
        except InvalidVersion as exc:
            raise forms.ValidationError(exc.detail) from exc

    def _post_clean(self) -> None:
        super()._post_clean()  # type: ignore[misc]
        if self.instance.pk is not None or self.errors or self.actor is None:
            return
        data = self.cleaned_data
        try:
            self.published = release_publish(
                version=data["version"],
                channel=data["channel"],
                notes=data.get("notes", ""),
                artifact=data.get("artifact_file"),
                signature=data.get("artifact_signature", ""),
                actor=self.actor,
            )
        except FleetError as exc:
            field = {"artifact": "artifact_file", "signature": "artifact_signature"}.get(
                exc.extra.get("field", ""), exc.extra.get("field")
            )
            self.add_error(field if field in self.fields else None, exc.detail)


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

    def get_fields(self, request: HttpRequest, obj: Release | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("version", "channel", "notes", "artifact_file", "artifact_signature")
        return (
            "version",
            "channel",
            "published_at",
            "notes",
            "artifact",
            "sha256",
            "size",
            "signature",
            "yanked",
            "yanked_at",
            "yanked_reason",
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Release | None = None) -> list[str]:
        if obj is None:
            return []
        return [
            "version",
            "channel",
            "published_at",
            "artifact",
            "sha256",
            "size",
            "signature",
            "yanked",
            "yanked_at",
            "yanked_reason",
        ]

    def get_form(
        self, request: HttpRequest, obj: Release | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm]:
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None:
            return form
        # One subclass per request, the actor with it. (An upload is spooled to a
        # temporary file by Django; one over RELEASE_MAX_BYTES is refused by its size
        # without being read.)
        return type(form.__name__, (form,), {"actor": request_actor(request)})

    @admin.display(description="agents on it", ordering="agents_on")
    def agents_on_it(self, obj: WithAnnotations[Release, ReleaseColumns]) -> int:
        return obj.agents_on

    def save_model(
        self, request: HttpRequest, obj: Release, form: forms.ModelForm, change: bool
    ) -> None:
        if change:
            release_update(release=obj, actor=request_actor(request))
            return
        # The form published it while validating (so a refusal was a form error); the
        # admin goes on with `obj` (its log entry, the redirect): give it that row.
        published = cast(ReleaseAdminForm, form).published
        assert published is not None
        obj.pk = published.pk

    @admin.action(description="Yank: never offer these as latest again", permissions=["change"])
    def yank(self, request: HttpRequest, queryset: QuerySet[Release]) -> None:
        for release in queryset:
            release_yank(
                release=release,
                reason=f"yanked by {request.user}",
                actor=request_actor(request),
            )
        self.message_user(request, f"Yanked {queryset.count()} release(s).")
