"""Spend caps per customer, role and agent, and the counters completions charge.

A cap is (scope, key, period): the customer's whole fleet (key ""), a role (key the
role), an agent (key its id). The spend counters hold one row per (scope, key, period,
period start); a completion adds to its six rows in one INSERT … ON CONFLICT DO UPDATE
(`budget_charge`), so concurrent completions add up exactly."""

from django.db import models
from django.db.models import Q

from fleet.choices import BudgetPeriod, BudgetScope
from fleet.models.tenancy import Customer


class BudgetCap(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="budget_caps")
    scope = models.CharField(max_length=16, choices=BudgetScope.choices)
    scope_key = models.CharField(max_length=32, blank=True, help_text="Role or agent id.")
    period = models.CharField(max_length=8, choices=BudgetPeriod.choices)
    max_cost_usd = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    max_tokens = models.BigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "scope", "scope_key", "period"], name="budget_cap_unique"
            ),
            models.CheckConstraint(
                condition=(Q(max_cost_usd__isnull=True) | Q(max_cost_usd__gte=0))
                & (Q(max_tokens__isnull=True) | Q(max_tokens__gte=0)),
                name="budget_cap_not_negative",
            ),
        ]
        ordering = ["scope", "scope_key", "period"]

    def __str__(self) -> str:
        return f"{self.scope}:{self.scope_key} {self.period}"


class BudgetSpend(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="budget_spend")
    scope = models.CharField(max_length=16, choices=BudgetScope.choices)
    scope_key = models.CharField(max_length=32, blank=True)
    period = models.CharField(max_length=8, choices=BudgetPeriod.choices)
    period_start = models.DateField(help_text="The UTC day, or the first day of the month.")
    cost_usd = models.DecimalField(max_digits=16, decimal_places=6, default=0)
    tokens = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "scope", "scope_key", "period", "period_start"],
                name="budget_spend_unique",
            ),
        ]
        ordering = ["-period_start"]

    def __str__(self) -> str:
        return f"{self.scope}:{self.scope_key} {self.period} {self.period_start}"
