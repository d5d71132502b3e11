"""`python -m vidsearch.web.manage [--store DIR] COMMAND ...`: Django's manage.py for the site over one store.

With `--store`, production settings (unless DJANGO_SETTINGS_MODULE says otherwise) and the store's site database
and key; e.g. `python -m vidsearch.web.manage --store STORE createsuperuser` to create the user who may upload.
"""

from __future__ import annotations

import os
import sys

from vidsearch.web.setup import PROD_SETTINGS, prepare_environment


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) > 2 and argv[1] == "--store":
        prepare_environment(argv[2])
        del argv[1:3]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", PROD_SETTINGS)
    from django.core.management import execute_from_command_line

    execute_from_command_line(argv)


if __name__ == "__main__":
    main()
