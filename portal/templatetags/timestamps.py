"""Times as people read them: "3 min ago" in a <time> that carries the exact moment
(portal.js shows it on hover in the viewer's own time zone; the server writes UTC), and
how long something took."""

from datetime import UTC, datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()

_UNITS = [("days", 86_400), ("h", 3_600), ("min", 60), ("s", 1)]


def utc_text(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _span(seconds: float, *, units: int) -> str:
    """`seconds` in its largest unit and the `units - 1` after it, whole units down:
    "3 min", "2 h 5 min"; a unit that comes to zero after the first is left out."""
    seconds = int(seconds)
    first = next(i for i, (name, size) in enumerate(_UNITS) if seconds >= size or name == "s")
    parts: list[str] = []
    for name, size in _UNITS[first : first + units]:
        amount, seconds = divmod(seconds, size)
        if amount or not parts:
            parts.append(f"{amount} {'day' if name == 'days' and amount == 1 else name}")
    return " ".join(parts)


@register.filter
def ago(moment: datetime | None) -> str:
    """`<time>` saying "3 min ago" (or "in 2 min"), the exact moment in its title; empty
    for no moment, so `|default:"—"` names the gap."""
    if moment is None:
        return ""
    seconds = (timezone.now() - moment).total_seconds()
    if abs(seconds) < 5:
        text = "just now"
    elif seconds > 0:
        text = f"{_span(seconds, units=1)} ago"
    else:
        text = f"in {_span(-seconds, units=1)}"
    return format_html(
        '<time datetime="{}" title="{}">{}</time>', _iso(moment), utc_text(moment), text
    )


@register.filter
def timestamp(moment: datetime | None) -> str:
    """`<time>` with the exact moment as its text (portal.js rewrites it in the viewer's
    time zone)."""
    if moment is None:
        return ""
    return format_html(
        '<time datetime="{}" data-absolute>{}</time>', _iso(moment), utc_text(moment)
    )


@register.filter
def duration(span: timedelta | None) -> str:
    """ "12 s", "3 min 4 s", "2 h 5 min", "3 days 2 h"; empty for none."""
    if span is None:
        return ""
    return _span(max(span.total_seconds(), 0), units=2)
