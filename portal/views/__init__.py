"""Customer pages. Every view resolves the member's customer first and reads through a
selector that takes it, so another customer's ids are a 404; writes call one service.
Owners and admins steer; viewers only look (the server refuses them, not just the UI).
One module a page area, `base` what they share; the views are re-exported here so
`portal.urls` names them as `views.<name>`."""

from portal.views.account import (
    activity,
    activity_export,
    api_key_revoke_view,
    api_keys,
    customer_settings,
    switch_customer,
)
from portal.views.alerts import alert_channel_action, alert_redeliver_view, alerts
from portal.views.anomalies import (
    anomalies,
    anomaly_reopen_view,
    anomaly_resolve_view,
    incident_resolve_view,
)
from portal.views.budgets import budget_set_view
from portal.views.bulk import agents_bulk, bulk_detail
from portal.views.dashboard import dashboard
from portal.views.fleet import (
    agent_decommission_view,
    agent_detail,
    agent_labels_view,
    agent_pause_view,
    agent_restore_view,
    agent_resume_view,
    agent_update_pin_view,
    agents,
    hosts,
)
from portal.views.integrations import github_secret_view
from portal.views.jobs import job_cancel_view, job_detail, jobs
from portal.views.lockout import login_unlock, login_unlock_confirm
from portal.views.members import (
    invitation_accept_view,
    invitation_open,
    invitation_withdraw_view,
    member_remove_view,
    member_role_view,
    members,
    members_two_factor_view,
)
from portal.views.plan import plan
from portal.views.questions import question_answer_view, questions
from portal.views.rollouts import agent_options, upgrade_detail, upgrade_steer, upgrades
from portal.views.sign_in import (
    PasswordResetConfirmView,
    PasswordResetDoneView,
    PasswordResetView,
    second_factor,
    two_factor,
)
from portal.views.tokens import token_revoke_view, tokens

__all__ = [
    "PasswordResetConfirmView",
    "PasswordResetDoneView",
    "PasswordResetView",
    "activity",
    "activity_export",
    "agent_decommission_view",
    "agent_detail",
    "agent_labels_view",
    "agent_options",
    "agent_pause_view",
    "agent_restore_view",
    "agent_resume_view",
    "agent_update_pin_view",
    "agents",
    "agents_bulk",
    "alert_channel_action",
    "alert_redeliver_view",
    "alerts",
    "anomalies",
    "anomaly_reopen_view",
    "anomaly_resolve_view",
    "api_key_revoke_view",
    "api_keys",
    "budget_set_view",
    "bulk_detail",
    "customer_settings",
    "dashboard",
    "github_secret_view",
    "hosts",
    "incident_resolve_view",
    "invitation_accept_view",
    "invitation_open",
    "invitation_withdraw_view",
    "job_cancel_view",
    "job_detail",
    "jobs",
    "login_unlock",
    "login_unlock_confirm",
    "member_remove_view",
    "member_role_view",
    "members",
    "members_two_factor_view",
    "plan",
    "question_answer_view",
    "questions",
    "second_factor",
    "switch_customer",
    "token_revoke_view",
    "tokens",
    "two_factor",
    "upgrade_detail",
    "upgrade_steer",
    "upgrades",
]
