"""Releases: publish a version, see how many agents run it, yank it."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from django import forms
from django.contrib import admin
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest

from fleet.admin.base import NoDeleteAdmin
from fleet.errors import InvalidVersion
from fleet.http import request_actor
from fleet.models import Agent, Release
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

    def get_fields(self, request: HttpRequest, obj: Release | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("version", "channel", "notes")
        return (
            "version",
            "channel",
            "published_at",
            "notes",
            "yanked",
            "yanked_at",
            "yanked_reason",
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Release | None = None) -> list[str]:
        if obj is None:
            return []
        return ["version", "channel", "published_at", "yanked", "yanked_at", "yanked_reason"]

    @admin.display(description="agents on it", ordering="agents_on")
    def agents_on_it(self, obj: WithAnnotations[Release, ReleaseColumns]) -> int:
        return obj.agents_on

    def save_model(
        self, request: HttpRequest, obj: Release, form: forms.ModelForm, change: bool
    ) -> None:
        if change:
            release_update(release=obj, actor=request_actor(request))
            return
        published = release_publish(
            version=obj.version,
            channel=obj.channel,
            notes=obj.notes,
            actor=request_actor(request),
        )
        # The admin goes on with `obj` (its log entry, the redirect): give it the row the
        # service created.
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
