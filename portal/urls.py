from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from portal import sso, views

app_name = "portal"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="registration/login.html"),
        name="login",
    ),
    path("login/unlock/", views.login_unlock, name="login_unlock"),
    path("login/unlock/<str:token>/", views.login_unlock_confirm, name="login_unlock_confirm"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path(
        "password/",
        auth_views.PasswordChangeView.as_view(
            template_name="registration/password_change.html",
            success_url=reverse_lazy("portal:password_done"),
        ),
        name="password",
    ),
    path(
        "password/done/",
        auth_views.PasswordChangeDoneView.as_view(template_name="registration/password_done.html"),
        name="password_done",
    ),
    path("login/verify/", views.second_factor, name="second_factor"),
    path("two-factor/", views.two_factor, name="two_factor"),
    path("password/reset/", views.PasswordResetView.as_view(), name="password_reset"),
    path(
        "password/reset/sent/",
        views.PasswordResetDoneView.as_view(),
        name="password_reset_done",
    ),
    path(
        "password/reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path(
        "password/reset/done/",
        auth_views.PasswordResetCompleteView.as_view(
            template_name="registration/password_reset_complete.html"
        ),
        name="password_reset_complete",
    ),
    path("switch/", views.switch_customer, name="switch"),
    path("sso/", sso.sso_choose, name="sso"),
    path("sso/callback/", sso.SsoCallbackView.as_view(), name="sso_callback"),
    path("sso/<slug:slug>/", sso.SsoStartView.as_view(), name="sso_start"),
    path("members/", views.members, name="members"),
    path("members/two-factor/", views.members_two_factor_view, name="members_two_factor"),
    path("members/<int:membership_id>/role/", views.member_role_view, name="member_role"),
    path("members/<int:membership_id>/remove/", views.member_remove_view, name="member_remove"),
    path(
        "members/invitations/<int:invitation_id>/withdraw/",
        views.invitation_withdraw_view,
        name="invitation_withdraw",
    ),
    path("invitations/accept/", views.invitation_accept_view, name="invitation_accept"),
    path("invitations/<str:token>/", views.invitation_open, name="invitation_open"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:token_id>/revoke/", views.token_revoke_view, name="token_revoke"),
    path("agents/", views.agents, name="agents"),
    path("agents/<int:agent_id>/", views.agent_detail, name="agent_detail"),
    path("agents/bulk/", views.agents_bulk, name="agents_bulk"),
    path("agents/options/", views.agent_options, name="agent_options"),
    path("agents/bulk/<int:action_id>/", views.bulk_detail, name="bulk_detail"),
    path(
        "agents/<int:agent_id>/decommission/",
        views.agent_decommission_view,
        name="agent_decommission",
    ),
    path("agents/<int:agent_id>/pause/", views.agent_pause_view, name="agent_pause"),
    path("agents/<int:agent_id>/labels/", views.agent_labels_view, name="agent_labels"),
    path("agents/<int:agent_id>/update-pin/", views.agent_update_pin_view, name="agent_update_pin"),
    path("agents/<int:agent_id>/resume/", views.agent_resume_view, name="agent_resume"),
    path("agents/<int:agent_id>/restore/", views.agent_restore_view, name="agent_restore"),
    path("hosts/", views.hosts, name="hosts"),
    path("jobs/", views.jobs, name="jobs"),
    path("jobs/<int:job_id>/", views.job_detail, name="job_detail"),
    path("jobs/<int:job_id>/cancel/", views.job_cancel_view, name="job_cancel"),
    path("questions/", views.questions, name="questions"),
    path(
        "questions/<int:question_id>/answer/",
        views.question_answer_view,
        name="question_answer",
    ),
    path("anomalies/", views.anomalies, name="anomalies"),
    path("anomalies/resolve/", views.incident_resolve_view, name="incident_resolve"),
    path("anomalies/<int:anomaly_id>/resolve/", views.anomaly_resolve_view, name="anomaly_resolve"),
    path("anomalies/<int:anomaly_id>/reopen/", views.anomaly_reopen_view, name="anomaly_reopen"),
    path("upgrades/", views.upgrades, name="upgrades"),
    path("upgrades/<int:rollout_id>/", views.upgrade_detail, name="upgrade_detail"),
    path("upgrades/<int:rollout_id>/<str:action>/", views.upgrade_steer, name="upgrade_steer"),
    path("plan/", views.plan, name="plan"),
    path("keys/", views.api_keys, name="api_keys"),
    path("keys/<int:key_id>/revoke/", views.api_key_revoke_view, name="api_key_revoke"),
    path("activity/", views.activity, name="activity"),
    path("activity/export/", views.activity_export, name="activity_export"),
    path("settings/", views.customer_settings, name="settings"),
    path("settings/budgets/", views.budget_set_view, name="budget_set"),
    path("settings/github/", views.github_secret_view, name="github_secret"),
    path("alerts/", views.alerts, name="alerts"),
    path(
        "alerts/channels/<int:channel_id>/<str:action>/",
        views.alert_channel_action,
        name="alert_channel_action",
    ),
    path(
        "alerts/deliveries/<int:delivery_id>/redeliver/",
        views.alert_redeliver_view,
        name="alert_redeliver",
    ),
]
