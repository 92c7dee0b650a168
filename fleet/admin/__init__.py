"""Staff pages. Writes go through services (so each is audited); list pages select
their relations and annotate their counts so no page issues queries per row.

One module per area; importing them here runs every `@admin.register` when Django's
admin autodiscovery imports `fleet.admin`."""

from django.contrib import admin

from fleet.admin import agents, customers, records, releases, rollouts

admin.site.site_header = "Agentina Control Plane — staff"
admin.site.site_title = "Agentina staff"
admin.site.index_title = "Customers, licenses and every fleet"

__all__ = ["agents", "customers", "records", "releases", "rollouts"]
