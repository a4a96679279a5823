"""Make a candidate policy version live."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from governance.actors import acting_user
from rl_engine.errors import PolicyError, PolicyGateError
from rl_engine.models import PolicyVersion
from rl_engine.services import promote_policy


class Command(BaseCommand):
    help = "Promote a policy version if its evaluation clears the gate."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("label", help="policy version label")
        parser.add_argument("--reason", required=True, help="why; kept in the log")
        parser.add_argument("--user", help="username of the person promoting")
        parser.add_argument(
            "--force", action="store_true", help="promote past a failed gate"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            version = PolicyVersion.objects.get(label=options["label"])
        except PolicyVersion.DoesNotExist as error:
            raise CommandError(f"No policy version {options['label']!r}.") from error
        try:
            promoted = promote_policy(
                version=version,
                actor=acting_user(options["user"]),
                reason=options["reason"],
                force=options["force"],
            )
        except PolicyError as error:
            message = f"[{error.code}] {error.message}"
            if isinstance(error, PolicyGateError):
                message += f"\n{error.override_hint(version.label)}"
            raise CommandError(message) from error
        self.stdout.write(self.style.SUCCESS(f"{promoted.label} is live."))
