"""`manage load_captions MANIFEST`: the caption database (categories, captions per video) from a data manifest."""

from __future__ import annotations

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from vidsearch.data.manifest import ManifestError, load_manifest
from vidsearch.web.library.services import load_captions


class Command(BaseCommand):
    help = ("Load the caption database (each video's category and captions) from a data manifest (JSON Lines), "
            "creating the database if needed.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("manifest", help="data manifest, e.g. from `vidsearch synth` or `vidsearch import`")

    def handle(self, *args, manifest: str, **options) -> None:
        try:
            records = load_manifest(manifest)
        except (ManifestError, OSError) as error:
            raise CommandError(str(error)) from None
        call_command("migrate", interactive=False, verbosity=0)  # the store's site database may not exist yet
        report = load_captions(records=records)
        self.stdout.write(f"caption database: {report.videos} videos, {report.categories} categories")
