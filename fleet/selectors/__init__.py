"""Every shared read. Portal and API reads take the customer, so tenancy is in the query.

One module per topic; every selector is re-exported here, so callers import from
`fleet.selectors` and need not know which module holds it.
"""

from fleet.selectors.access import (
    api_key_for_secret,
    api_key_get,
    api_key_list,
    audit_list,
    membership_list,
)
from fleet.selectors.advice import (
    SIZING,
    Advice,
    SizingRow,
    fleet_advice,
    fleet_sizing,
)
from fleet.selectors.agents import (
    AGENT_SORTS,
    AgentFacts,
    UpgradeOrder,
    agent_filter_choices,
    agent_for_secret,
    agent_get,
    agent_job_cap,
    agent_latest_release,
    agent_search,
    agent_upgrade_order,
    agent_with_facts,
    agents_cleanup_due,
    agents_with_facts,
    bulk_action_get,
    host_list,
)
from fleet.selectors.alerts import (
    alert_channel_get,
    alert_channel_list,
    alert_delivery_get,
    alert_delivery_list,
)
from fleet.selectors.anomalies import Incident, anomaly_get, anomaly_incidents, anomaly_list
from fleet.selectors.audit import (
    MACHINE_ACTIONS,
    ActorKind,
    actor_kind,
    audit_search,
    audit_trail,
)
from fleet.selectors.jobs import JOB_SORTS, job_counts, job_get, job_list
from fleet.selectors.licenses import (
    Seats,
    customer_active_agent_count,
    license_current,
    license_seats,
)
from fleet.selectors.metrics import (
    CHART_RANGES,
    ChartRange,
    FleetMetrics,
    RoleNumbers,
    fleet_metrics,
    minor_floor,
    role_numbers,
    rollup_series,
    snapshot_series,
    throughput_baselines,
)
from fleet.selectors.releases import release_latest, release_list_for
from fleet.selectors.rollouts import (
    BatchProgress,
    rollout_batches,
    rollout_get,
    rollout_list,
    upgrade_history,
)
from fleet.selectors.tokens import token_get, token_list

__all__ = [
    "AGENT_SORTS",
    "CHART_RANGES",
    "JOB_SORTS",
    "MACHINE_ACTIONS",
    "SIZING",
    "ActorKind",
    "Advice",
    "AgentFacts",
    "BatchProgress",
    "ChartRange",
    "FleetMetrics",
    "Incident",
    "RoleNumbers",
    "Seats",
    "SizingRow",
    "UpgradeOrder",
    "actor_kind",
    "agent_filter_choices",
    "agent_for_secret",
    "agent_get",
    "agent_job_cap",
    "agent_latest_release",
    "agent_search",
    "agent_upgrade_order",
    "agent_with_facts",
    "agents_cleanup_due",
    "agents_with_facts",
    "alert_channel_get",
    "alert_channel_list",
    "alert_delivery_get",
    "alert_delivery_list",
    "anomaly_get",
    "anomaly_incidents",
    "anomaly_list",
    "api_key_for_secret",
    "api_key_get",
    "api_key_list",
    "audit_list",
    "audit_search",
    "audit_trail",
    "bulk_action_get",
    "customer_active_agent_count",
    "fleet_advice",
    "fleet_metrics",
    "fleet_sizing",
    "host_list",
    "job_counts",
    "job_get",
    "job_list",
    "license_current",
    "license_seats",
    "membership_list",
    "minor_floor",
    "release_latest",
    "release_list_for",
    "role_numbers",
    "rollout_batches",
    "rollout_get",
    "rollout_list",
    "rollup_series",
    "snapshot_series",
    "throughput_baselines",
    "token_get",
    "token_list",
    "upgrade_history",
]
