from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agentina.signing import generate_keypair, save_private_key

PRIVATE_NAME = "release-signing.pem"
PUBLIC_NAME = "release-signing.pub"


class Command(BaseCommand):
    help = (
        "Write a release signing key pair into DIR: the private key (PEM, mode 0600; keep it "
        "off the server) and the public key, printed with the RELEASE_PUBLIC_KEY line to set."
    )
    requires_system_checks: list[str] = []  # never touches the database

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--out", required=True, metavar="DIR", help="Where to write.")

    def handle(self, *args: Any, out: str, **options: Any) -> None:
        directory = Path(out)
        private_path, public_path = directory / PRIVATE_NAME, directory / PUBLIC_NAME
        for path in (private_path, public_path):
            if path.exists():
                raise CommandError(f"{path} exists: a signing key is never overwritten.")
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            private, public = generate_keypair()
            save_private_key(private, private_path)
            public_path.write_text(public + "\n")
        except OSError as exc:
            raise CommandError(f"Cannot write the key pair into {directory}: {exc}") from exc
        self.stdout.write(public)
        self.stdout.write(f"RELEASE_PUBLIC_KEY={public}")
        self.stderr.write(
            f"Wrote {private_path} (private, mode 0600: sign releases with it, keep it off "
            f"the server) and {public_path}. Set RELEASE_PUBLIC_KEY in the server's "
            "environment; agents pin it when they activate."
        )
