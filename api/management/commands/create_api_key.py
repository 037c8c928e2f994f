"""``manage.py create_api_key USERNAME [--scope trade] [--name NAME]``: print a new key once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import errors
from accounts.models import User
from api.models import ApiKey
from api.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for a user and print it (it is stored hashed and shown only now)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="The user the key trades for.")
        parser.add_argument(
            "--scope",
            choices=ApiKey.Scope.values,
            default=ApiKey.Scope.READ,
            help="read (the default) only reads; trade also places orders and changes positions.",
        )
        parser.add_argument(
            "--name",
            default="command line",
            help="Shown on the user's API keys page (default 'command line').",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named {options['username']!r}.")
        if not user.is_active:
            raise CommandError(f"{user} is deactivated: the API would refuse a key of theirs.")
        try:
            created = api_key_create(user_id=user.pk, name=options["name"], scope=options["scope"])
        except errors.DomainError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(created.raw)
