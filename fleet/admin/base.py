"""What every staff page shares: no deletes, read-only pages, the four fleet numbers above
a list, and actions that ask for a note before they call a service."""

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from fleet.http import request_actor
from fleet.models import Customer
from fleet.paging import CappedPaginator
from fleet.selectors import fleet_numbers_taken


class ValidatedFiltersAdmin(admin.ModelAdmin):
    """A list's query is checked before Django builds the list from it: what no database
    can take (NUL, which PostgreSQL refuses in any text; a date-hierarchy year past
    Python's dates) raises IncorrectLookupParameters, which Django's changelist turns into
    its "?e=1" redirect to the unfiltered list (the same as for a lookup it cannot apply),
    never a 500. Other malformed values (a word where an id goes, an unknown choice) Django
    already refuses that way, or they match nothing."""

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        for name, values in request.GET.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                raise IncorrectLookupParameters(f"NUL in the filter {name!r}")
        if self.date_hierarchy:
            for part in ("year", "month", "day"):
                value = request.GET.get(f"{self.date_hierarchy}__{part}")
                if value is not None and not (
                    value.isascii() and value.isdigit() and len(value) <= 4
                ):
                    raise IncorrectLookupParameters(f"{part} {value!r} is no date part")
        return super().get_changelist_instance(request)


class NoDeleteAdmin(ValidatedFiltersAdmin):
    """Rows here are history: suspend, yank or revoke instead of deleting (and unlike a
    delete, those are audited). Lists count at most COUNT_CAP rows, and never the whole
    table beside a filtered one (a year of audit events is not counted per page view)."""

    paginator = CappedPaginator
    show_full_result_count = False

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
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

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False


class FleetNumbersMixin(admin.ModelAdmin):
    """Shows the four numbers above the list, as the newest minute snapshot took them:
    every fleet, or the customer filtered on."""

    change_list_template = "admin/fleet/change_list_numbers.html"
    customer_param = "customer__id__exact"

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        raw = request.GET.get(self.customer_param, "")
        wellformed = raw.isascii() and raw.isdigit() and len(raw) < 19  # not "²", not past bigint
        customer = Customer.objects.filter(pk=int(raw)).first() if wellformed else None
        extra = {
            "fleet_numbers": fleet_numbers_taken(customer),
            "fleet_scope": customer.name if customer else "every fleet",
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra_context=extra)


class NoteForm(forms.Form):
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=2000)


def note_action(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    action: str,
    verb: str,
    apply: Callable[..., int],
) -> TemplateResponse | None:
    """An admin action that asks for a note first (who acted and why go to the audit log):
    shows the form, then calls apply(ids=..., note=..., actor=...) when it is filled in."""
    form = NoteForm(request.POST if "apply" in request.POST else None)
    if form.is_valid():
        done = apply(
            ids=list(queryset.values_list("pk", flat=True)),
            note=form.cleaned_data["note"],
            actor=request_actor(request),
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

    def has_add_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False
