"""Customers with their members and licenses: the pages where staff sign a customer up
and set what its fleet may do."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.forms import BaseInlineFormSet
from django.http import HttpRequest

from fleet.admin.base import NoDeleteAdmin, ReadOnlyInline
from fleet.errors import InvalidInput, InvalidLicense, LastOwner, LicenseBelowActiveAgents
from fleet.http import request_actor
from fleet.models import Agent, Customer, License, Membership
from fleet.selectors import license_current
from fleet.services.customers import (
    CUSTOMER_EDITABLE,
    MAINTENANCE_WINDOW_FIELDS,
    customer_create,
    customer_update,
    maintenance_window_check,
    membership_remove,
    membership_replace,
    membership_set,
    update_pins_check,
)
from fleet.services.licenses import (
    LICENSE_EDITABLE,
    license_create,
    license_resume,
    license_suspend,
    license_update,
    license_validate,
)

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class CustomerColumns(TypedDict):
    current_plan: str | None
    current_seats: int | None
    active_agents: int


class LicenseColumns(TypedDict):
    active_agents: int


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

    def clean_username(self) -> User:
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


class CustomerAdminForm(forms.ModelForm):
    class Meta:
        model = Customer
        fields = [*CUSTOMER_EDITABLE, "stale_cleanup_since"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if "time_zone" in self.fields and not self.errors:
            try:
                maintenance_window_check(
                    cleaned.get("time_zone") or "",
                    cleaned.get("maintenance_days") or [],
                    cleaned.get("maintenance_start"),
                    cleaned.get("maintenance_end"),
                )
            except InvalidInput as exc:
                field = {"days": "maintenance_days", "start": "maintenance_start"}.get(
                    exc.extra.get("field", ""), exc.extra.get("field")
                )
                self.add_error(field if field in self.fields else None, exc.detail)
        if "update_pins" in self.fields and "update_pins" in cleaned:
            try:
                cleaned["update_pins"] = update_pins_check(cleaned["update_pins"])
            except InvalidInput as exc:
                self.add_error("update_pins", exc.detail)
        return cleaned


@admin.register(Customer)
class CustomerAdmin(NoDeleteAdmin):
    form = CustomerAdminForm
    list_display = ["name", "slug", "plan", "seats", "agents_active", "created_at"]
    search_fields = ["name", "slug", "contact_email"]
    prepopulated_fields = {"slug": ["name"]}
    date_hierarchy = "created_at"
    inlines = [MembershipInline, LicenseInline]
    readonly_fields = ["stale_cleanup_since"]

    def get_exclude(self, request: HttpRequest, obj: Customer | None = None) -> list[str]:
        # A new customer starts without a maintenance window (waves step at any time).
        return [] if obj else ["time_zone", "update_pins", *MAINTENANCE_WINDOW_FIELDS]

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
    def plan(self, obj: WithAnnotations[Customer, CustomerColumns]) -> str:
        return obj.current_plan or "— no license —"

    @admin.display(description="max agents", ordering="current_seats")
    def seats(self, obj: WithAnnotations[Customer, CustomerColumns]) -> int | None:
        return obj.current_seats

    @admin.display(description="active agents", ordering="active_agents")
    def agents_active(self, obj: WithAnnotations[Customer, CustomerColumns]) -> int:
        return obj.active_agents

    def save_model(
        self, request: HttpRequest, obj: Customer, form: forms.ModelForm, change: bool
    ) -> None:
        if change:
            customer_update(customer=obj, actor=request_actor(request))
            return
        created = customer_create(
            name=obj.name,
            slug=obj.slug,
            contact_email=obj.contact_email,
            notes=obj.notes,
            actor=request_actor(request),
        )
        # The admin goes on with `obj` (the inlines, its log entry, the redirect): give it
        # the row the service created.
        obj.pk = created.pk

    def save_formset(
        self, request: HttpRequest, form: forms.ModelForm, formset: BaseInlineFormSet, change: bool
    ) -> None:
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)
        # The admin's change message reads these; services do the writing below.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        actor = request_actor(request)
        for member_form in formset.forms:
            if not member_form.has_changed() or not member_form.cleaned_data:
                continue
            deleted = member_form in formset.deleted_forms
            user = member_form.cleaned_data["username"]
            role = member_form.cleaned_data["role"]
            pk = member_form.instance.pk
            stored = (
                Membership.objects.select_related("customer", "user").get(pk=pk) if pk else None
            )
            try:
                if stored is None:
                    if not deleted:
                        membership_set(customer=form.instance, user=user, role=role, actor=actor)
                elif deleted:
                    membership_remove(membership=stored, actor=actor)
                else:
                    membership_replace(membership=stored, user=user, role=role, actor=actor)
            except LastOwner as exc:
                messages.error(request, exc.detail)
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

    def get_readonly_fields(self, request: HttpRequest, obj: License | None = None) -> list[str]:
        return [*self.readonly_fields, "customer"] if obj else list(self.readonly_fields)

    @admin.display(description="active agents", ordering="active_agents")
    def agents_active(self, obj: WithAnnotations[License, LicenseColumns]) -> int:
        return obj.active_agents

    def save_model(
        self, request: HttpRequest, obj: License, form: forms.ModelForm, change: bool
    ) -> None:
        confirm = form.cleaned_data.get("confirm_below_active", False)
        if change:
            license_update(license=obj, actor=request_actor(request), confirm_below_active=confirm)
        else:
            license_create(license=obj, actor=request_actor(request), confirm_below_active=confirm)

    @admin.action(description="Suspend: no new agents can activate", permissions=["change"])
    def suspend(self, request: HttpRequest, queryset: QuerySet[License]) -> None:
        for lic in queryset:
            license_suspend(
                license=lic,
                reason=f"suspended by {request.user}",
                actor=request_actor(request),
            )
        self.message_user(request, f"Suspended {queryset.count()} license(s).")

    @admin.action(description="Resume suspended licenses", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[License]) -> None:
        for lic in queryset:
            license_resume(license=lic, actor=request_actor(request))
        self.message_user(request, f"Resumed {queryset.count()} license(s).")
