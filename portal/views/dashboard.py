"""The dashboard: the four numbers with their 24-hour charts, which htmx polls, and the
advice and anti-patterns, which a poll leaves alone."""

from collections.abc import Callable, Sequence

from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import render

from fleet import policy, selectors
from fleet.choices import AnomalyKind
from fleet.models import Customer
from portal.charts import Sparkline, downsample, sparkline
from portal.views.base import (
    PortalRequest,
    label_filter,
    member_view,
    page_context,
    partial_or_page,
    query_string,
)


def _charts(customer: Customer, chart_range: selectors.ChartRange) -> dict[str, Sparkline]:
    """The five numbers (and the cost) over the range, at the resolution retention keeps
    that long: minute snapshots, hourly or daily rollups, each pre-aggregated."""
    series: Sequence[object | None] = (
        selectors.snapshot_series(customer, hours=chart_range.periods)
        if chart_range.resolution is None
        else selectors.rollup_series(customer, chart_range.resolution, periods=chart_range.periods)
    )

    def chart(
        field: str,
        pick: Callable[[list[float]], float] = max,
        *,
        floor: float | None = None,
        ceiling: float | None = None,
    ) -> Sparkline:
        values: list[float | None] = [getattr(s, field) if s else None for s in series]
        return sparkline(downsample(values, pick=pick), floor=floor, ceiling=ceiling)

    return {
        "online": chart("online_ratio", pick=min, floor=0.0, ceiling=1.0),
        "throughput": chart("jobs_completed_last_hour", floor=0.0),
        "anomalies": chart("anomalies_unresolved", floor=0.0),
        "skew": chart("agents_not_on_latest", floor=0.0),
        "acceptance": chart("acceptance", pick=min, floor=0.0, ceiling=1.0),
        "cost": chart("cost_per_hour", floor=0.0),
    }


@member_view()
def dashboard(request: PortalRequest, customer: Customer) -> HttpResponse:
    metrics = selectors.fleet_metrics(customer)
    roles = metrics.roles  # the numbers, the table and the advice read one scan
    quality = selectors.fleet_quality(customer, by_agent=False)  # agents: on their pages
    label = label_filter(request)  # the table only: the advice is about the whole fleet
    chart_range = selectors.CHART_RANGES.get(
        request.GET.get("range", ""), selectors.CHART_RANGES["24h"]
    )
    context = page_context(
        request,
        metrics=metrics,
        quality=quality,
        target=policy.ONLINE_RATIO_TARGET,
        charts=_charts(customer, chart_range),
        chart_range=chart_range,
        chart_ranges=[
            (r, query_string(label=label, range=r.key)) for r in selectors.CHART_RANGES.values()
        ],
        poll_query=query_string(label=label, range=chart_range.key),
        advice=selectors.fleet_advice(customer, roles=roles, quality=quality),
        roles=selectors.role_numbers(customer, label=label) if label else roles,
        label=label,
        poll_seconds=settings.PORTAL_POLL_SECONDS,
    )
    if not request.htmx:
        # The header and the findings lie outside the numbers a poll swaps in.
        seats = selectors.license_seats(customer, used=metrics.agents_active)
        context.update(
            license=seats.license,
            seats=seats,
            anti_patterns=selectors.anomaly_list(customer).filter(kind=AnomalyKind.ANTI_PATTERN),
        )
    return render(request, partial_or_page(request, "portal/dashboard.html", "numbers"), context)
