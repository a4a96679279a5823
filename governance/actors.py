"""Who acts, as management commands that change logged state name them."""

from django.contrib.auth.models import User
from django.core.management.base import CommandError


def acting_user(username: str | None) -> User | None:
    """The user a command's ``--user`` names; none when it names no one."""
    if not username:
        return None
    try:
        return User.objects.get(username=username)
    except User.DoesNotExist as error:
        raise CommandError(f"No user {username!r}.") from error
