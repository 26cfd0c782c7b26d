import os
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from scans.models import Category
from scans.rules import (
    DEFAULT_RULEBASE,
    RuleBaseError,
    load_rulebase,
    read_rulebase,
    warm_embeddings,
)


class Command(BaseCommand):
    help = "Load the disposal rule base (taxonomy, tags, steps, exclusions) from YAML into the DB."

    def add_arguments(self, parser):
        parser.add_argument("--path", type=Path, default=DEFAULT_RULEBASE)
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="Do nothing when a rule base is already loaded (keeps edits made in the admin).",
        )

    def handle(self, *args, path: Path, if_empty: bool, **options):
        if if_empty and Category.objects.exists():
            self.stdout.write(
                "Rule base already loaded; keeping it (run without --if-empty to reload)."
            )
        else:
            try:
                counts = load_rulebase(read_rulebase(path))
            except (OSError, RuleBaseError, KeyError) as exc:
                raise CommandError(f"cannot load rule base from {path}: {exc}") from exc
            summary = ", ".join(f"{n} {name}" for name, n in counts.items())
            self.stdout.write(self.style.SUCCESS(f"Rule base loaded: {summary}."))
        # Embedding every alias once here, with all cores, spares each worker a cold start.
        started = time.monotonic()
        aliases = warm_embeddings(num_threads=os.cpu_count() or 1)
        self.stdout.write(f"Matcher ready: {aliases} aliases ({time.monotonic() - started:.1f}s).")
