from fleet.models.agents import Agent, AgentFactsChange, Host
from fleet.models.alerts import AlertChannel, AlertDelivery, AlertEvent
from fleet.models.anomalies import Anomaly
from fleet.models.api_keys import CustomerApiKey
from fleet.models.audit import AuditEvent
from fleet.models.budgets import BudgetCap, BudgetSpend
from fleet.models.bulk import BulkAction
from fleet.models.jobs import Job
from fleet.models.licenses import License
from fleet.models.metrics import FleetRollup, FleetSnapshot, SweepState
from fleet.models.outcomes import GithubIntegration, JobOutcome
from fleet.models.questions import Question
from fleet.models.releases import Release
from fleet.models.rollouts import Rollout, RolloutTarget
from fleet.models.sessions import UserSession
from fleet.models.sso import CustomerSso, SsoIdentity
from fleet.models.tenancy import Customer, Invitation, Membership
from fleet.models.tokens import ActivationToken

__all__ = [
    "ActivationToken",
    "Agent",
    "AgentFactsChange",
    "AlertChannel",
    "AlertDelivery",
    "AlertEvent",
    "Anomaly",
    "AuditEvent",
    "BudgetCap",
    "BudgetSpend",
    "BulkAction",
    "Customer",
    "CustomerApiKey",
    "CustomerSso",
    "FleetRollup",
    "FleetSnapshot",
    "GithubIntegration",
    "Host",
    "Invitation",
    "Job",
    "JobOutcome",
    "License",
    "Membership",
    "Question",
    "Release",
    "Rollout",
    "RolloutTarget",
    "SsoIdentity",
    "SweepState",
    "UserSession",
]
