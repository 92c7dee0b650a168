from fleet.models.agents import Agent, AgentFactsChange, Host
from fleet.models.alerts import AlertChannel, AlertDelivery, AlertEvent
from fleet.models.anomalies import Anomaly
from fleet.models.api_keys import CustomerApiKey
from fleet.models.audit import AuditEvent
from fleet.models.bulk import BulkAction
from fleet.models.jobs import Job
from fleet.models.licenses import License
from fleet.models.metrics import FleetRollup, FleetSnapshot, SweepState
from fleet.models.releases import Release
from fleet.models.rollouts import Rollout, RolloutTarget
from fleet.models.tenancy import Customer, Membership
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
    "BulkAction",
    "Customer",
    "CustomerApiKey",
    "FleetRollup",
    "FleetSnapshot",
    "Host",
    "Job",
    "License",
    "Membership",
    "Release",
    "Rollout",
    "RolloutTarget",
    "SweepState",
]
