"""A simulated fleet for the demo and for tests: the reference agent's own code, on the
real HTTP API, many agents in threads."""

import logging
import random
import signal
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agentina.simulate import Fleet
from fleet.models import Customer, CustomerApiKey
from fleet.services.api_keys import api_key_mint, api_key_revoke
from fleet.services.audit import Actor

SIMULATOR_KEY = "fleet simulator"  # the name of the API key each run mints


def simulator_state_root(customer: Customer) -> Path:
    """Where the customer's simulated agents keep their state (seed_demo's too)."""
    return Path(settings.VAR_DIR) / "simulator" / customer.slug


class Command(BaseCommand):
    help = "Run N simulated agents of a customer against a running Control Plane."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--customer", required=True, help="The customer's slug.")
        parser.add_argument(
            "--agents",
            type=int,
            default=6,
            help="In all: every stored agent runs (the seeded demo agents among them), and "
            "more are activated up to this.",
        )
        parser.add_argument("--server", default="http://127.0.0.1:8000")
        parser.add_argument(
            "--duration", type=float, default=0, help="Seconds; 0 runs until stopped."
        )
        parser.add_argument(
            "--failure-rate", type=float, default=0.02, help="The share of jobs that fail."
        )
        parser.add_argument(
            "--job-seconds",
            type=float,
            nargs=2,
            default=(5.0, 40.0),
            metavar=("MIN", "MAX"),
            help="How long each simulated job works.",
        )
        parser.add_argument(
            "--flap",
            type=float,
            default=0.0,
            help="Chance each minute that an agent goes quiet for 4 minutes (0: never).",
        )
        parser.add_argument(
            "--smoke-failures",
            type=int,
            default=0,
            help="How many agents fail their upgrade's smoke check.",
        )
        parser.add_argument(
            "--question-rate",
            type=float,
            default=0.03,
            help="The share of jobs that ask a person first (answered after 90 s if nobody "
            "does on the portal).",
        )
        parser.add_argument(
            "--worse-version",
            default="1.10.0",
            help="A release whose jobs cost twice as much and are accepted half as often "
            "('' for none).",
        )
        parser.add_argument(
            "--incident-every",
            type=float,
            default=30,
            help="Minutes, on average, between model-provider incidents (0: never).",
        )
        parser.add_argument(
            "--jobs-per-minute",
            type=int,
            default=20,
            help="At most; fewer when the queue is already longer than half the online agents.",
        )

    def handle(self, *args: Any, **o: Any) -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise
        customer = Customer.objects.filter(slug=o["customer"]).first()
        if customer is None:
            raise CommandError(f"No customer {o['customer']!r}.")
        actor = Actor(label="manage.py simulate_fleet")
        # One key per run; the previous runs' are revoked, so `make run` again and again
        # never reaches the customer's cap on active keys.
        for old in CustomerApiKey.objects.filter(
            customer=customer, name=SIMULATOR_KEY, revoked_at__isnull=True
        ):
            api_key_revoke(key=old, actor=actor)
        _, key = api_key_mint(customer=customer, name=SIMULATOR_KEY, actor=actor)
        fleet = Fleet(
            server=o["server"],
            api_key=key,
            state_root=simulator_state_root(customer),
            failure_rate=o["failure_rate"],
            job_seconds=tuple(o["job_seconds"]),
            smoke_failures=set(range(o["smoke_failures"])),
            question_rate=o["question_rate"],
            worse_version=o["worse_version"],
            log=lambda m: self.stdout.write(m),
        )
        agents = fleet.enroll(o["agents"])
        self.stdout.write(f"{len(agents)} simulated agents of {customer.name} on {o['server']}")
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        fleet.start()
        for target, extra in (
            (fleet.workload, (o["jobs_per_minute"],)),
            (fleet.flap, (o["flap"], random.Random(7))),
            (fleet.answer_questions, ()),
            (fleet.judge, (random.Random(11),)),
            (fleet.provider_incidents, (random.Random(13), o["incident_every"])),
        ):
            threading.Thread(target=target, args=(stop, *extra), daemon=True).start()
        stop.wait(o["duration"] or None)
        fleet.halt()
        self.stdout.write("simulated fleet stopped")
