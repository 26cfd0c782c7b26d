from django.core.management.base import BaseCommand

from scans import services
from scans.broker import broker_has_dead_lettering, dead_letter_depth


class Command(BaseCommand):
    help = "Move dead letters back: drain scan.ai.dlq and resume their scans from the failed step."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="only show what is waiting")

    def handle(self, *args, dry_run: bool, **options):
        from scans.models import DeadLetter

        pending = DeadLetter.objects.filter(redriven_at=None).count()
        depth = dead_letter_depth()
        where = (
            f"{depth} on scan.ai.dlq" if broker_has_dead_lettering() else "no DLQ on this broker"
        )
        self.stdout.write(f"Dead letters: {pending} not yet redriven in the DB; {where}.")
        if dry_run:
            return
        drained, retried = services.redrive_dead_letters(actor="manage.py redrive_dlq")
        self.stdout.write(
            self.style.SUCCESS(f"Drained {drained} message(s); re-enqueued {retried} scan(s).")
        )
