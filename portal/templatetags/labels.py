"""How the portal names and marks things, the same on every page: a status as its pill,
a job as "coder: lint the parser"."""

from typing import Protocol

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from fleet.models import Job

register = template.Library()


class HasStatus(Protocol):
    status: str

    def get_status_display(self) -> str: ...


@register.simple_tag
def status_pill(obj: HasStatus) -> SafeString:
    """`<span class="pill <status>">Label</span>`: portal.css colours each status once."""
    return format_html('<span class="pill {}">{}</span>', obj.status, obj.get_status_display())


@register.filter
def job_label(job: Job) -> str:
    """Its role and task on one line, shortened: "coder: lint the parser"."""
    task = job.payload.get("task") if isinstance(job.payload, dict) else None
    if not task:
        return job.role
    words = " ".join(str(task).split())
    return f"{job.role}: {Truncator(words).chars(48)}"
