"""Staff pages. Writes go through services (so each is audited); list pages select
their relations and annotate their counts so no page issues queries per row.

One module per area; importing them here runs every `@admin.register` when Django's
admin autodiscovery imports `fleet.admin`."""

from axes.models import AccessAttempt, AccessFailureLog, AccessLog  # type: ignore[import-untyped]
from django.contrib import admin

from fleet.admin import agents, customers, records, releases, rollouts, sso
from fleet.admin.base import ValidatedFiltersAdmin

# django-axes' own lists (access attempts, failures, logs) get the same filter checks as ours.
for _model in (AccessAttempt, AccessFailureLog, AccessLog):
    if admin.site.is_registered(_model):
        _registered = type(admin.site.get_model_admin(_model))
        admin.site.unregister(_model)
        admin.site.register(
            _model, type(_registered.__name__, (ValidatedFiltersAdmin, _registered), {})
        )

admin.site.site_header = "Agentina Control Plane — staff"
admin.site.site_title = "Agentina staff"
admin.site.index_title = "Customers, licenses and every fleet"

__all__ = ["agents", "customers", "records", "releases", "rollouts", "sso"]
