from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from config.api import api
from fleet import prometheus
from portal.views import docs

# The product's docs: public, no login (error bodies link to /docs/troubleshooting#code).
docs_urls = (
    [
        path("", docs.docs_index, name="index"),
        path("security", docs.security, name="security"),
        path("updates", docs.updates, name="updates"),
        path("troubleshooting", docs.troubleshooting, name="troubleshooting"),
    ],
    "docs",
)

# The product docs name /admin/agents, /admin/jobs and /admin/anomalies.
admin_shortcuts = [
    re_path(
        rf"^admin/{name}/?$",
        RedirectView.as_view(pattern_name=f"admin:fleet_{model}_changelist", query_string=True),
    )
    for name, model in (
        ("agents", "agent"),
        ("jobs", "job"),
        ("anomalies", "anomaly"),
        ("hosts", "host"),
        ("tokens", "activationtoken"),
        ("rollouts", "rollout"),
        ("releases", "release"),
        ("licenses", "license"),
        ("customers", "customer"),
        ("audit", "auditevent"),
    )
]

urlpatterns = [
    *admin_shortcuts,
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("portal/", include("portal.urls")),
    path("metrics", prometheus.metrics, name="metrics"),
    path("docs/", include(docs_urls)),
    path("", RedirectView.as_view(pattern_name="portal:dashboard", permanent=False)),
]
