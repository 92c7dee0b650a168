"""Costs and rates as the dashboard writes them."""

from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def usd(value: Decimal | float | None) -> str:
    """$1,234.56; small amounts to four places ($0.0042); — for none."""
    if value is None:
        return "—"
    amount = Decimal(str(value))
    return f"${amount:,.2f}" if amount == 0 or amount >= Decimal("0.1") else f"${amount:.4f}"


@register.filter
def percent(value: float | None) -> str:
    """62%; — for none (nothing judged)."""
    return "—" if value is None else f"{value:.0%}"
