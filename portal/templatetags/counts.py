"""Counts as lists show them: a count that reached the cap (COUNT_CAP) reads "10,000+"."""

from django import template
from django.contrib.humanize.templatetags.humanize import intcomma

from fleet import policy

register = template.Library()


@register.filter
def count(value: int) -> str:
    if value > policy.COUNT_CAP:
        return f"{intcomma(policy.COUNT_CAP)}+"
    return intcomma(value)
