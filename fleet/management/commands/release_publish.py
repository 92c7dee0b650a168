import hashlib
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agentina.artifact import build_from_source
from agentina.signing import SignatureInvalid, load_private_key, public_key_b64, sign_release
from fleet.choices import Channel
from fleet.errors import FleetError
from fleet.services.audit import Actor
from fleet.services.releases import release_publish, release_version_parse


class Command(BaseCommand):
    help = (
        "Sign an agent artifact (or build one from this repository with --from-source) and "
        "publish it as VERSION; the server checks the signature against RELEASE_PUBLIC_KEY."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("version", help="The release's semantic version, e.g. 1.99.0.")
        parser.add_argument("--channel", choices=Channel.values, default=Channel.STABLE)
        parser.add_argument("--notes", default="", help="What changed, for operators.")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--artifact", metavar="FILE", help="The archive to publish.")
        source.add_argument(
            "--from-source",
            action="store_true",
            help="Build the reference agent from this repository, stamped with VERSION.",
        )
        parser.add_argument(
            "--signing-key",
            required=True,
            metavar="FILE",
            help="The private key `release_keygen` wrote (it never leaves this machine).",
        )

    def handle(
        self,
        *args: Any,
        version: str,
        channel: str,
        notes: str,
        artifact: str | None,
        from_source: bool,
        signing_key: str,
        **options: Any,
    ) -> None:
        try:
            parsed = str(release_version_parse(version))
            private = load_private_key(signing_key)
        except FleetError as exc:
            raise CommandError(exc.detail) from exc
        except (OSError, SignatureInvalid) as exc:
            raise CommandError(f"Cannot read the signing key: {exc}") from exc
        if settings.RELEASE_PUBLIC_KEY and public_key_b64(private) != settings.RELEASE_PUBLIC_KEY:
            raise CommandError(
                f"{signing_key} is not the key RELEASE_PUBLIC_KEY names: the server would "
                "refuse its signature. Nothing was published."
            )
        with tempfile.TemporaryDirectory(prefix="agentina-build-") as build:
            path = build_from_source(parsed, build) if from_source else Path(artifact or "")
            if not path.is_file():
                raise CommandError(f"No artifact file at {path}.")
            sha256, size = _measure(path)
            signature = sign_release(private, parsed, sha256, size)
            try:
                with path.open("rb") as upload:
                    release = release_publish(
                        version=parsed,
                        channel=channel,
                        notes=notes,
                        artifact=upload,
                        artifact_name=path.name,
                        signature=signature,
                        actor=Actor(label="manage.py release_publish"),
                    )
            except FleetError as exc:
                raise CommandError(f"{exc.code}: {exc.detail}") from exc
        self.stdout.write(
            f"Published {release.version} ({release.channel}): {release.size} bytes, "
            f"sha256 {release.sha256}."
        )


def _measure(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
