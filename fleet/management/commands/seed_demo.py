"""Demo data for `make run`: a staff login, two customers, their fleets. Safe to run again:
rows are found by their natural keys, and the demo fleet is brought back online."""

import os
import random
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agentina.state import AgentState
from fleet.choices import (
    AgentRole,
    AgentStatus,
    AnomalyKind,
    AnomalySeverity,
    Channel,
    JobStatus,
    MemberRole,
    RollupResolution,
    TokenStatus,
)
from fleet.management.commands.simulate_fleet import simulator_state_root
from fleet.models import (
    ActivationToken,
    Agent,
    Anomaly,
    Customer,
    FleetRollup,
    FleetSnapshot,
    Host,
    Job,
    License,
    Release,
)
from fleet.models.agents import COME_BACK, DECOMMISSION
from fleet.models.tokens import REDEEM
from fleet.secrets import SecretKind, secret_mint
from fleet.services.anomalies import anomaly_open
from fleet.services.audit import Actor
from fleet.services.customers import customer_create, membership_set
from fleet.services.detections import fleet_detect
from fleet.services.licenses import license_create
from fleet.services.releases import release_publish
from fleet.services.rollups import rollups_daily
from fleet.services.snapshots import fleet_snapshots_take
from fleet.services.tokens import token_mint

DEMO_SERVER = f"http://{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}/"
SEED = Actor(label="seed_demo")  # who the audit log says made the demo

DEMO_PASSWORD = "agentina-demo"  # noqa: S105 - printed for the demo on purpose

RELEASES = [  # version, channel, age in days
    ("1.8.0", Channel.STABLE, 60),
    ("1.9.3", Channel.STABLE, 30),
    ("1.10.0", Channel.STABLE, 5),
    ("1.11.0-beta.1", Channel.BETA, 2),
]

CUSTOMERS: list[dict[str, Any]] = [
    {
        "name": "Acme Robotics",
        "slug": "acme",
        "license": {"plan": "team", "max_agents": 20, "max_concurrent_tasks_per_agent": 2},
        "members": [
            ("ada", MemberRole.OWNER),
            ("alan", MemberRole.ADMIN),
            ("grace", MemberRole.VIEWER),
        ],
        "hosts": [
            ("acme-build-01", "eu-west-1a", 16384),
            ("acme-build-02", "eu-west-1b", 16384),
            ("acme-test-01", "eu-west-1a", 32768),
        ],
        # name, role, host index, version, working? (False: retired, history only)
        "agents": [
            ("coder-1", AgentRole.CODER, 0, "1.10.0", True),
            ("coder-2", AgentRole.CODER, 0, "1.10.0", True),
            ("coder-3", AgentRole.CODER, 1, "1.9.3", True),
            ("coder-4", AgentRole.CODER, 1, "1.8.0", False),
            ("reviewer-1", AgentRole.REVIEWER, 0, "1.10.0", True),
            ("reviewer-2", AgentRole.REVIEWER, 1, "1.9.3", True),
            ("tester-1", AgentRole.TESTER, 2, "1.10.0", True),
            ("tester-2", AgentRole.TESTER, 2, "1.8.0", True),
            ("indexer-1", AgentRole.INDEXER, 1, "1.10.0", True),
        ],
        "jobs": {"queued": 5, "running": 3, "succeeded": 180, "failed": 3},
    },
    {
        "name": "Globex Labs",
        "slug": "globex",
        "license": {
            "plan": "starter",
            "max_agents": 5,
            "max_concurrent_tasks_per_agent": 1,
            "channel": Channel.BETA,
        },
        "members": [("hank", MemberRole.OWNER)],
        "hosts": [("globex-ci-01", "us-east-1a", 8192)],
        "agents": [
            ("gx-coder-1", AgentRole.CODER, 0, "1.11.0-beta.1", True),
            ("gx-reviewer-1", AgentRole.REVIEWER, 0, "1.10.0", True),
            ("gx-tester-1", AgentRole.TESTER, 0, "1.10.0", True),
        ],
        "jobs": {"queued": 2, "running": 1, "succeeded": 60, "failed": 0},
    },
]

REPOS = ["acme/firmware", "acme/planner", "acme/web", "globex/ledger"]


def _repo_of(customer: Customer) -> str:
    return next((r for r in REPOS if r.startswith(customer.slug)), REPOS[0])


JOBS_AN_HOUR_PER_AGENT = 24  # per seeded agent: about what `make run` then finishes an hour


class Command(BaseCommand):
    help = "Seed demo customers, fleets, jobs and anomalies, and print the demo logins."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force",
            action="store_true",
            help="Seed even with DEBUG off (it creates a superuser with a published password).",
        )

    def handle(self, *args: Any, force: bool = False, **options: Any) -> None:
        if not settings.DEBUG and not force:
            raise CommandError(
                "seed_demo creates a superuser with a published password; it runs with "
                "DEBUG=true (as `make run` sets) or with --force."
            )
        with transaction.atomic():
            staff = self._user("staff", is_staff=True)
            for version, channel, age in RELEASES:
                if not Release.objects.filter(version=version).exists():
                    release = release_publish(actor=SEED, version=version, channel=channel)
                    Release.objects.filter(pk=release.pk).update(
                        published_at=timezone.now() - timedelta(days=age)
                    )
            for spec in CUSTOMERS:
                self._customer(spec)
            rollups_daily()  # the seeded hours, folded into days for the 12-month chart
            fleet_detect(fleet_snapshots_take())
        self.stdout.write(
            self.style.SUCCESS(f"Demo data ready. Logins (password for all: {DEMO_PASSWORD}):")
        )
        self.stdout.write(f"  staff admin  {staff.get_username():<8} /admin/")
        for spec in CUSTOMERS:
            for username, role in spec["members"]:
                self.stdout.write(f"  {spec['slug']:<6} {role:<6} {username:<8} /portal/")

    def _user(self, username: str, *, is_staff: bool = False) -> Any:
        user, _ = get_user_model().objects.get_or_create(username=username)
        user.is_staff = user.is_superuser = is_staff
        user.email = f"{username}@example.com"
        user.set_password(DEMO_PASSWORD)
        user.save()
        return user

    def _customer(self, spec: dict[str, Any]) -> None:
        customer = Customer.objects.filter(slug=spec["slug"]).first() or customer_create(
            actor=SEED,
            name=spec["name"],
            slug=spec["slug"],
            contact_email=f"ops@{spec['slug']}.example",
        )
        if not License.objects.filter(customer=customer, is_current=True).exists():
            license_create(actor=SEED, license=License(customer=customer, **spec["license"]))
        for username, role in spec["members"]:
            membership_set(actor=SEED, customer=customer, user=self._user(username), role=role)

        hosts = [
            Host.objects.update_or_create(
                customer=customer,
                machine_id=f"{hostname}-machine-id",
                defaults={"hostname": hostname, "zone": zone, "memory_mb": memory},
            )[0]
            for hostname, zone, memory in spec["hosts"]
        ]
        agents = []
        for name, role, host_index, version, working in spec["agents"]:
            agent = self._agent(customer, hosts[host_index], name, role, version, working)
            if working:
                agents.append(agent)

        if not customer.activation_tokens.filter(status=TokenStatus.OUTSTANDING).exists():
            token_mint(
                actor=SEED, customer=customer, role=AgentRole.CODER, note="for the next coder host"
            )
            token_mint(actor=SEED, customer=customer, note="any role")
        if not Job.objects.filter(customer=customer).exists():
            self._jobs(customer, agents, spec["jobs"])
        if not Anomaly.objects.filter(customer=customer).exists():
            self._anomalies(customer, agents)
        if not FleetSnapshot.objects.filter(customer=customer).exists():
            self._history(customer, agents)

    def _agent(
        self, customer: Customer, host: Host, name: str, role: str, version: str, working: bool
    ) -> Agent:
        """A working demo agent gets a fresh secret, stored where `simulate_fleet` (which
        `make run` starts) finds it, so it heartbeats and works like any agent; a retired
        one is history: decommissioned two days ago."""
        now = timezone.now()
        minted = secret_mint(SecretKind.AGENT_SECRET)
        on_unit = Agent.objects.filter(host=host, unit_name=f"agentina@{name}")
        # A working agent a user of the demo retired stays retired; a successor takes its
        # unit. A retired one is found retired.
        agent = (on_unit.holding_seat() if working else on_unit).order_by("-pk").first()
        if agent is None:
            token, _ = token_mint(actor=SEED, customer=customer, role=role, note=f"for {name}")
            agent = Agent.objects.create(
                customer=customer,
                host=host,
                activation_token=token,
                name=name,
                role=role,
                unit_name=f"agentina@{name}",
                state_dir=f"/var/lib/agentina/{name}",
                version=version,
                secret_prefix=minted.display_prefix,
                secret_digest=minted.digest,
                last_heartbeat_at=now,
            )
            ActivationToken.objects.filter(pk=token.pk).transition(REDEEM, redeemed_at=now)
        rows = Agent.objects.filter(pk=agent.pk)
        if not working:
            retired = now - timedelta(days=2)
            rows.transition(DECOMMISSION, decommissioned_at=retired)
            rows.update(last_heartbeat_at=retired)
            agent.refresh_from_db()
            return agent
        rows.transition(COME_BACK)
        rows.update(
            secret_prefix=minted.display_prefix,
            secret_digest=minted.digest,
            last_heartbeat_at=now,
        )
        agent.refresh_from_db()
        AgentState(
            server=DEMO_SERVER,
            agent_id=agent.pk,
            secret=minted.plaintext,
            role=role,
            version=str(agent.version),
            unit_name=agent.unit_name,
            machine_id=host.machine_id,
            hostname=host.hostname,
        ).save(simulator_state_root(customer) / name)
        return agent

    def _jobs(self, customer: Customer, agents: list[Agent], counts: dict[str, int]) -> None:
        now = timezone.now()
        online = [a for a in agents if a.status == AgentStatus.ONLINE]
        repos = [r for r in REPOS if r.startswith(customer.slug)] or REPOS
        roles = [AgentRole.CODER, AgentRole.REVIEWER, AgentRole.TESTER, AgentRole.CODER]
        jobs = []
        for i in range(counts["queued"]):
            jobs.append(
                Job(
                    customer=customer,
                    role=roles[i % len(roles)],
                    priority=i % 3,
                    payload={
                        "repo": repos[i % len(repos)],
                        "ref": "main",
                        "task": f"issue #{100 + i}",
                    },
                )
            )
        for i in range(counts["running"]):
            agent = online[i % len(online)]
            jobs.append(
                Job(
                    customer=customer,
                    role=agent.role,
                    status=JobStatus.RUNNING,
                    agent=agent,
                    attempts=1,
                    started_at=now - timedelta(minutes=4 + i),
                    lease_expires_at=now + timedelta(minutes=5),
                    payload={
                        "repo": repos[i % len(repos)],
                        "ref": "main",
                        "task": f"feature #{200 + i}",
                    },
                )
            )
        # The last hour's work, spread over it at the rate the history charts show, so
        # the first live snapshots continue the day instead of dropping from it.
        for status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            for i in range(counts[status]):
                agent = online[i % len(online)]
                finished = now - timedelta(hours=1) * (i + 0.5) / counts[status]
                jobs.append(
                    Job(
                        customer=customer,
                        role=agent.role,
                        status=status,
                        agent=agent,
                        attempts=1,
                        started_at=finished - timedelta(seconds=30),
                        finished_at=finished,
                        result={"summary": "done"} if status == JobStatus.SUCCEEDED else None,
                        error="" if status == JobStatus.SUCCEEDED else "tests failed after change",
                        payload={
                            "repo": repos[i % len(repos)],
                            "ref": "main",
                            "task": f"task #{300 + i}",
                        },
                    )
                )
        Job.objects.bulk_create(jobs)
        # queued_at is set on insert (now): move each started job's queue time before it.
        Job.objects.filter(customer=customer, started_at__isnull=False).update(
            queued_at=F("started_at") - timedelta(seconds=45)
        )

    def _anomalies(self, customer: Customer, agents: list[Agent]) -> None:
        """What an agent would have reported; the detections (skew, anti-patterns, ...)
        come from a real snapshot run."""
        reporter = agents[0]
        anomaly_open(
            actor=SEED,
            customer=customer,
            kind=AnomalyKind.AGENT_REPORTED,
            fingerprint=f"agent:{reporter.pk}:git-fetch",
            agent_id=reporter.pk,
            severity=AnomalySeverity.WARNING,
            message=f"git fetch of {_repo_of(customer)} failed twice (HTTP 503); "
            "retried and succeeded.",
        )

    def _history(self, customer: Customer, agents: list[Agent]) -> None:
        # The simulated agents (`make run`) work around the clock at about this pace, so
        # the seeded past does too: the throughput trend reads about 100% at any hour.
        """A day of minute snapshots and a month of hourly rollups (folded into days), so
        charts, trends and baselines have a past."""
        now = timezone.now().replace(second=0, microsecond=0)
        rng = random.Random(customer.slug)
        total = len(agents)
        rows = []
        for minute in range(1, 24 * 60 + 1):
            at = now - timedelta(minutes=minute)
            daytime = 8 <= at.hour < 20
            online = total - (1 if rng.random() < 0.02 else 0)  # a rare restart
            busy = max(
                0, min(online, round(online * (0.8 if daytime else 0.5) + rng.uniform(-1, 1)))
            )
            rows.append(
                FleetSnapshot(
                    customer=customer,
                    taken_at=at,
                    agents_total=total,
                    agents_online=online,
                    agents_busy=busy,
                    online_ratio=online / total,
                    # about what the simulated agents finish (`make run`)
                    jobs_completed_last_hour=round(
                        JOBS_AN_HOUR_PER_AGENT * total + rng.uniform(-8, 8)
                    ),
                    queue_depth=max(0, round((5 if daytime else 2) + rng.uniform(-2, 2))),
                    jobs_running=busy,
                    wait_p50_seconds=rng.uniform(20, 60),
                    wait_p95_seconds=rng.uniform(90, 300),
                    idle_ratio=1 - busy / online if online else None,
                    anomalies_unresolved=rng.choice([1, 2, 2, 3]),
                    agents_not_on_latest=total // 2,
                    agents_minor_behind=total // 4,
                )
            )
        FleetSnapshot.objects.bulk_create(rows, ignore_conflicts=True)
        this_hour = now.replace(minute=0)
        hours = []
        for n in range(1, 30 * 24 + 1):
            start = this_hour - timedelta(hours=n)
            daytime = 8 <= start.hour < 20
            online = total - (1 if rng.random() < 0.05 else 0)
            hours.append(
                FleetRollup(
                    customer=customer,
                    resolution=RollupResolution.HOUR,
                    period_start=start,
                    minutes=60,
                    jobs_completed=round(JOBS_AN_HOUR_PER_AGENT * total + rng.uniform(-8, 8)),
                    jobs_failed=rng.choice([0, 0, 1]),
                    agents_total=total,
                    online_ratio=online / total,
                    online_ratio_avg=(online + total) / 2 / total,
                    queue_depth=round((7 if daytime else 3) + rng.uniform(-2, 2)),
                    wait_p50_seconds=rng.uniform(20, 60),
                    wait_p95_seconds=rng.uniform(90, 300),
                    idle_ratio=rng.uniform(0.1, 0.3) if daytime else rng.uniform(0.4, 0.6),
                    anomalies_unresolved=rng.choice([1, 2, 3]),
                    agents_not_on_latest=total // 2,
                )
            )
        FleetRollup.objects.bulk_create(hours, ignore_conflicts=True)
