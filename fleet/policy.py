"""Every product threshold, in one place.

These are product rules, fixed in code and tested as such. What an operator may tune
(the online window, the job lease, attempts, heartbeat pacing, the throughput-drop
finding...) is a setting read from the environment in config/settings.py and listed in
the README; code reads those from `settings` when it runs."""

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

# --- activation tokens and agents ---------------------------------------------------------

TOKEN_LIFETIME = timedelta(days=7)  # a minted token's default
TOKEN_LIFETIME_MAX = timedelta(days=90)
TOKENS_PER_MINT_MAX = 100  # tokens one request may mint (portal and API alike)
# A lost activation answer can be recovered by the caller that sent it (its install key
# proves it) this long after the first redemption; later, a redeemed token is no
# credential at all.
ACTIVATION_RETRY_WINDOW = timedelta(minutes=15)
AGENT_CLOCK_SKEW_TOLERANCE = timedelta(seconds=60)  # more: a finding, never a refusal
AGENT_PAUSE_REASON_MAX = 500  # characters of a pause's reason (audited)
AGENT_PAUSE_TIMEOUT_MAX = timedelta(days=30)  # the longest timeout a pause may carry
# Stale cleanup (opted in per customer): what it will do is listed on the portal this long
# before (and it first acts this long after being turned on); a cleaned-up agent can be
# restored this long, then it is decommissioned for good.
CLEANUP_NOTICE = timedelta(days=1)
CLEANUP_UNDO_WINDOW = timedelta(days=7)


LABELS_MAX = 32  # labels on one agent, token or job


# --- jobs ---------------------------------------------------------------------------------

# A running job past its max runtime is told to stop (and counted as timed out); a job
# takes its own max_runtime, else its customer's default, else this.
JOB_MAX_RUNTIME_DEFAULT = timedelta(hours=6)
JOB_MAX_RUNTIME_LIMIT = timedelta(days=7)  # the longest max runtime a job or customer may set


# --- upgrade waves ------------------------------------------------------------------------


@dataclass(frozen=True)
class WaveDefaults:
    """What a wave uses unless its owner says otherwise (model, service and forms)."""

    canary_soak: timedelta = timedelta(hours=24)
    batch_fraction: Decimal = Decimal("0.25")
    batch_watch: timedelta = timedelta(hours=1)
    throughput_drop_tolerance: Decimal = Decimal("0.20")
    online_ratio_floor: Decimal = Decimal("0.95")
    # Quality and cost (when enough jobs were judged): the upgraded agents' acceptance may
    # drop this much (relative) and their cost per accepted job grow this much.
    acceptance_drop_tolerance: Decimal = Decimal("0.20")
    cost_increase_tolerance: Decimal = Decimal("0.50")
    agent_deadline: timedelta = timedelta(minutes=30)  # an agent told to upgrade; then failed


# The longest soak and watch a wave may be given (the Upgrades page and the API).
CANARY_SOAK_MAX_HOURS = 24 * 14
BATCH_WATCH_MAX_MINUTES = 24 * 60
WAVE = WaveDefaults()
WAVE_BASELINE_WINDOW = timedelta(hours=24)  # the upgraded agents' work before, to compare
WAVE_MIN_BASELINE_JOBS = 3  # fewer jobs than this before the upgrade: too little to compare
# Judged jobs on each side (before and after the upgrade) below which the quality and cost
# checks say "not enough judged jobs" and pass; the baseline is the same agents' jobs on
# their earlier versions within this window.
WAVE_MIN_JUDGED_JOBS = 5
WAVE_QUALITY_WINDOW = timedelta(days=7)


# --- health, findings and advice ------------------------------------------------------------

ONLINE_RATIO_TARGET = 0.95  # healthy above this
THROUGHPUT_BASELINE_MIN = 10  # jobs/hour; below this a baseline is too thin to compare
JOB_FAILURES_PER_HOUR = 3  # failed jobs of one agent in an hour that open a finding
IDLE_TARGET = 0.25  # idle above this: add work, not agents
# A role's acceptance this much lower (relative) than the week before: the advice to add
# agents of it says to review their work first.
ADVICE_ACCEPTANCE_DROP = 0.15
# Jobs of a role waiting this long (the oldest one), or every working agent of the role at
# its license's concurrent-task cap while jobs wait: that role needs agents.
ADVICE_WAIT = timedelta(minutes=2)
THROUGHPUT_BASELINE_DAYS = 7  # the same hour on each of these days is the baseline
IDLE_AGENT_MB = 200  # memory an agent holds between jobs
TESTER_WORKLOAD_MB = 1024  # a tester with a browser wants 1 to 2 GB; flag only sure excess
WAIT_WINDOW = timedelta(minutes=5)  # queue waits measured over jobs started this recently
# Minutes beat missed (beat or worker down, broker gone) are rebuilt from job history when
# snapshots resume, this far back; an older gap stays a gap, which the charts show.
SNAPSHOT_BACKFILL_LIMIT = timedelta(hours=3)


# --- alerts ---------------------------------------------------------------------------------

ALERT_RETRY_FOR = timedelta(hours=24)  # a failing delivery is retried this long, then failed
ALERT_DISABLE_AFTER = timedelta(hours=24)  # a channel failing this long is disabled
ALERT_BACKOFF_FIRST = timedelta(seconds=10)  # doubled each attempt, with jitter...
ALERT_BACKOFF_MAX = timedelta(hours=1)  # ...up to this; a receiver's Retry-After too
ALERT_SENDER_LEASE = timedelta(minutes=2)  # a sender that stops (killed) frees it after this
ALERT_STORM_WINDOW = timedelta(minutes=1)  # ALERT_CHANNEL_MAX_PER_MINUTE counts over this
ALERT_SIGNATURE_TOLERANCE = timedelta(minutes=5)  # receivers refuse older signatures
ALERT_NEAR_CAP = 0.9  # seats used of max_agents that raise license.near_cap
ALERT_LICENSE_EXPIRY_DAYS = (14, 3)  # license.expiring this many days before valid_until
ALERT_ONLINE_RATIO_MINUTES = 5  # minutes under ONLINE_RATIO_TARGET before the ratio alert
ALERT_AGENTS_LISTED = 50  # agents named in one agents.offline event (the count is exact)
ALERT_EVENT_TYPES_MAX = 32  # event names in one channel's filter


# --- lists at fleet scale -----------------------------------------------------------------

# Lists count at most this many rows (and page through as many): past it a page says
# "more than 10,000" instead of counting a year of history on every view; filters narrow.
COUNT_CAP = 10_000


# --- members and sign-in ------------------------------------------------------------------

INVITATION_LIFETIME = timedelta(days=7)  # an invitation link works once, until then
RECOVERY_CODES = 10  # recovery codes a user holds; using one spends it


# --- sign-in and abuse limits ---------------------------------------------------------------

# Wrong passwords past the free ones (LOGIN_ACCOUNT_FREE_FAILURES for a username from
# anywhere, LOGIN_ADDRESS_FREE_FAILURES for an address with any username) make the next
# attempt wait this long, doubling with each further one (up to LOGIN_DELAY_MAX_SECONDS).
LOGIN_DELAY_FIRST = timedelta(seconds=2)
LOGIN_ACCOUNT_FAILURE_WINDOW = timedelta(days=1)  # a username's failures are counted this long
LOGIN_ADDRESS_FAILURE_WINDOW = timedelta(hours=1)  # an address's (shared by a whole office)
LOGIN_UNLOCK_LIFETIME = timedelta(hours=1)  # an unlock link works once, this long
LOGIN_UNLOCK_MAILS_PER_HOUR = 3  # unlock mails one user gets; more asks send nothing
LOGIN_UNLOCK_ASKS_PER_ADDRESS = "10/hour"  # unlock requests from one address, any username

# Outstanding (unredeemed, unexpired) activation tokens a customer may hold at once, per
# seat of its license: enough to enrol the whole fleet twice, not a stockpile of secrets.
OUTSTANDING_TOKENS_PER_SEAT = 2
API_KEYS_PER_CUSTOMER_MAX = 20  # active (unrevoked) API keys of one customer
