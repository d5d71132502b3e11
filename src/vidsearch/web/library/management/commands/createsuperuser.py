"""Django's `createsuperuser`, with the site's password validators applied to DJANGO_SUPERUSER_PASSWORD under
`--noinput` too (Django checks them only when it prompts)."""

from __future__ import annotations

import os

from django.contrib.auth.management.commands import createsuperuser
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError


class Command(createsuperuser.Command):
    def handle(self, *args, **options):
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        if not options["interactive"] and password is not None:
            username = options.get(self.UserModel.USERNAME_FIELD) or os.environ.get("DJANGO_SUPERUSER_USERNAME", "")
            try:
                validate_password(password, self.UserModel(**{self.UserModel.USERNAME_FIELD: username}))
            except ValidationError as error:
                raise CommandError(f"DJANGO_SUPERUSER_PASSWORD: {' '.join(error.messages)}", returncode=2) from None
        return super().handle(*args, **options)
