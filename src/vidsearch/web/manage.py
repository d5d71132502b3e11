"""`python -m vidsearch.web.manage [--store DIR] COMMAND ...`: Django's manage.py for the site over one store.

With `--store`, production settings (unless DJANGO_SETTINGS_MODULE says otherwise) and the store's site database
and key, brought up to date (migrated) before the command runs; e.g.
`python -m vidsearch.web.manage --store STORE createsuperuser` to create the user who may upload, on a store that
has never been served.
"""

from __future__ import annotations

import os
import sys

from vidsearch.web.setup import PROD_SETTINGS, prepare_environment, start_django


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) > 2 and argv[1] == "--store":
        prepare_environment(argv[2])
        del argv[1:3]
        start_django()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", PROD_SETTINGS)
    from django.core.management import execute_from_command_line

    execute_from_command_line(argv)


if __name__ == "__main__":
    main()
