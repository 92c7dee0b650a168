from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fleet.models import Customer
from fleet.services.api_keys import api_key_mint
from fleet.services.audit import Actor


class Command(BaseCommand):
    help = "Mint a customer API key for automation and print it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("customer", help="The customer's slug.")
        parser.add_argument("--name", default="automation", help="What the key is for.")

    def handle(self, *args: Any, customer: str, name: str, **options: Any) -> None:
        found = Customer.objects.filter(slug=customer).first()
        if found is None:
            slugs = ", ".join(Customer.objects.values_list("slug", flat=True)) or "none yet"
            raise CommandError(f"No customer with slug {customer!r} (known: {slugs}).")
        key, secret = api_key_mint(
            customer=found, name=name, actor=Actor(label="manage.py issue_api_key")
        )
        self.stdout.write(secret)
        self.stderr.write(
            f"API key {key.display_prefix}… ({name}) for {found.name}. It is shown only now: "
            "store it in your secret manager. Send it as 'Authorization: Bearer <key>'."
        )
