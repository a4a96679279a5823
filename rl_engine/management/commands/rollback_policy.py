"""Put the previously live policy version back in place."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from governance.actors import acting_user
from rl_engine.errors import PolicyError
from rl_engine.services import rollback_policy


class Command(BaseCommand):
    help = "Retire the live policy version and restore the one live before it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reason", required=True, help="why; kept in the log")
        parser.add_argument("--user", help="username of the person rolling back")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            restored = rollback_policy(
                actor=acting_user(options["user"]), reason=options["reason"]
            )
        except PolicyError as error:
            raise CommandError(f"[{error.code}] {error.message}") from error
        self.stdout.write(self.style.SUCCESS(f"{restored.label} is live again."))
