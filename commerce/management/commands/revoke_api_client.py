"""Revoke an API client's key."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from commerce.errors import CommerceError
from commerce.services import revoke_api_client
from governance.actors import acting_user


class Command(BaseCommand):
    help = (
        "Revoke an API client: its key is refused from now on. To rotate a key, "
        "create a new client with the same --source, move the frontend to it, "
        "then revoke the old one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="name of the client")
        parser.add_argument("--reason", required=True, help="why; kept in the log")
        parser.add_argument("--user", help="username of the person revoking")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            client = revoke_api_client(
                name=options["name"],
                reason=options["reason"],
                actor=acting_user(options["user"]),
            )
        except CommerceError as error:
            raise CommandError(f"[{error.code}] {error.message}") from error
        self.stdout.write(
            self.style.SUCCESS(f"Client {client.name} is revoked; its key is refused.")
        )
