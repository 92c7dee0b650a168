"""What the staff index shows above the models: is the Control Plane ready, and are beat
and the workers running (the same checks as GET /api/v1/ready)."""

from django import template

from fleet.selectors.readiness import Readiness, readiness

register = template.Library()


@register.inclusion_tag("admin/fleet/readiness.html")
def fleet_readiness() -> dict[str, object]:
    state: Readiness = readiness()
    rows = [(name.replace("_", " ").capitalize(), check) for name, check in state.checks.items()]
    return {"state": state, "rows": rows}
