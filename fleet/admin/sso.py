"""Customers' single sign-on: staff set up each customer's OpenID Connect provider (the
secret is write-only here) and see who signed in through it."""

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from fleet.admin.base import NoDeleteAdmin, ReadOnlyAdmin
from fleet.choices import MemberRole
from fleet.http import request_actor
from fleet.models import CustomerSso, SsoIdentity
from fleet.services.sso import customer_sso_set


class CustomerSsoForm(forms.ModelForm):
    issuer = forms.URLField(
        max_length=500,
        assume_scheme="https",
        help_text="The provider's issuer URL; its /.well-known/openid-configuration is read.",
    )
    client_secret = forms.CharField(
        max_length=500,
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only: leave empty to keep the stored one.",
    )

    class Meta:
        model = CustomerSso
        fields = ["customer", "issuer", "client_id", "client_secret", "default_role", "enabled"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.instance.pk is None and not data.get("client_secret"):
            self.add_error("client_secret", "Required for a new set-up.")
        return data


@admin.register(CustomerSso)
class CustomerSsoAdmin(NoDeleteAdmin):
    form = CustomerSsoForm
    list_display = ["customer", "issuer", "client_id", "default_role", "enabled", "created_at"]
    list_select_related = ["customer"]
    search_fields = ["customer__name", "customer__slug", "issuer"]

    def get_readonly_fields(
        self, request: HttpRequest, obj: CustomerSso | None = None
    ) -> list[str]:
        return ["customer"] if obj else []

    def save_model(
        self, request: HttpRequest, obj: CustomerSso, form: forms.ModelForm, change: bool
    ) -> None:
        data = form.cleaned_data
        saved = customer_sso_set(
            customer=obj.customer,
            issuer=data["issuer"],
            client_id=data["client_id"],
            client_secret=data.get("client_secret") or "",
            default_role=MemberRole(data["default_role"]),
            enabled=data["enabled"],
            actor=request_actor(request),
        )
        obj.pk = saved.pk


@admin.register(SsoIdentity)
class SsoIdentityAdmin(ReadOnlyAdmin):
    list_display = ["email", "subject", "customer", "user", "created_at", "last_sign_in_at"]
    list_select_related = ["customer", "user"]
    search_fields = ["email", "subject", "customer__name"]
