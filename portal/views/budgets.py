"""Budgets on the Settings page: every member sees the caps and what the day or month
spent; owners set them (audited), and claims see a change at once."""

from decimal import Decimal

from django import forms
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from fleet.choices import BudgetPeriod, BudgetScope
from fleet.errors import FleetError
from fleet.http import request_actor
from fleet.models import Customer
from fleet.services.budgets import CapSetting, budget_caps_set
from portal.views.base import PortalRequest, member_view


class BudgetCapForm(forms.Form):
    scope = forms.ChoiceField(choices=BudgetScope.choices)
    key = forms.CharField(
        required=False, max_length=32, help_text="The role, or the agent's id; empty: the fleet."
    )
    period = forms.ChoiceField(choices=BudgetPeriod.choices)
    max_cost_usd = forms.DecimalField(
        required=False, min_value=Decimal(0), max_value=Decimal(10**6), decimal_places=6
    )
    max_tokens = forms.IntegerField(required=False, min_value=0, max_value=10**12)


@member_view(owner=True)
@require_POST
def budget_set_view(request: PortalRequest, customer: Customer) -> HttpResponse:
    """Set one cap (both limits empty removes it)."""
    form = BudgetCapForm(request.POST)
    if not form.is_valid():
        messages.error(
            request,
            "Budget not saved: "
            + "; ".join(
                f"{name}: {' '.join(str(e) for e in errors)}"
                for name, errors in form.errors.items()
            ),
        )
        return redirect("portal:settings")
    data = form.cleaned_data
    try:
        changed = budget_caps_set(
            customer=customer,
            caps=[
                CapSetting(
                    data["scope"],
                    data["key"].replace("\x00", "").strip(),
                    data["period"],
                    data["max_cost_usd"],
                    data["max_tokens"],
                )
            ],
            actor=request_actor(request),
        )
    except FleetError as exc:
        messages.error(request, f"Budget not saved: {exc.detail}")
        return redirect("portal:settings")
    messages.success(request, "Budget saved." if changed else "Nothing changed.")
    return redirect("portal:settings")
