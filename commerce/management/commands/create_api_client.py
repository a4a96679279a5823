"""Create an API client and print its key, once."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from commerce.errors import CommerceError
from commerce.models import ApiScope
from commerce.services import create_api_client


class Command(BaseCommand):
    help = "Create an API client for a shop frontend and show its key once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="unique name of the client")
        parser.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            choices=ApiScope.values,
            help="repeat for several; default: all scopes",
        )
        parser.add_argument(
            "--source", default="", help="event source name (default: the name)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            issued = create_api_client(
                name=options["name"],
                scopes=options["scopes"] or list(ApiScope.values),
                source=options["source"],
            )
        except CommerceError as error:
            raise CommandError(f"[{error.code}] {error.message}") from error
        self.stdout.write(
            f"Client {issued.client.name} (scopes: {', '.join(issued.client.scopes)})"
        )
        self.stdout.write("Its key, shown only now; store it in the shop's secrets:")
        self.stdout.write(issued.key)
