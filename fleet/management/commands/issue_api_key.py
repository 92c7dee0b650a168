from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from fleet.choices import ApiKeyScope
from fleet.errors import FleetError
from fleet.models import Customer
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import Actor


class Command(BaseCommand):
    help = "Mint a customer API key for automation and print it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("customer", help="The customer's slug.")
        parser.add_argument("--name", default="automation", help="What the key is for.")
        parser.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            choices=ApiKeyScope.values,
            metavar="SCOPE",
            help=f"A scope the key holds; repeat for more ({', '.join(ApiKeyScope.values)}). "
            "Default: every scope.",
        )
        parser.add_argument(
            "--expires-in-days",
            type=int,
            default=None,
            help="Days until the key stops working. Default: until revoked.",
        )

    def handle(
        self,
        *args: Any,
        customer: str,
        name: str,
        scopes: list[str] | None,
        expires_in_days: int | None,
        **options: Any,
    ) -> None:
        found = Customer.objects.filter(slug=customer).first()
        if found is None:
            slugs = ", ".join(Customer.objects.values_list("slug", flat=True)) or "none yet"
            raise CommandError(f"No customer with slug {customer!r} (known: {slugs}).")
        if expires_in_days is not None and expires_in_days < 1:
            raise CommandError("--expires-in-days must be at least 1.")
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
        try:
            key, secret = api_key_mint(
                customer=found,
                name=name,
                scopes=scopes,
                expires_at=expires_at,
                actor=Actor(label="manage.py issue_api_key"),
            )
        except FleetError as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(secret)
        expiry = f"expires {key.expires_at:%Y-%m-%d %H:%M} UTC" if key.expires_at else "no expiry"
        self.stderr.write(
            f"API key {key.display_prefix}… ({name}) for {found.name}: scopes "
            f"{', '.join(key.scope_list)}; {expiry}. It is shown only now: store it in your "
            "secret manager. Send it as 'Authorization: Bearer <key>'."
        )
