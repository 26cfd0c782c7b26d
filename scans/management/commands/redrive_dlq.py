from django.core.management.base import BaseCommand

from scans import services
from scans.broker import PARKED_DEAD_LETTER_QUEUE, broker_has_dead_lettering, dead_letter_depth


class Command(BaseCommand):
    help = (
        "Move dead letters back: take scan.ai.dlq into the DeadLetter table and resume the "
        "failed scans of pending dead letters from the failed step (not permanent failures, "
        "unless --force)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="only show what is waiting")
        parser.add_argument(
            "--force",
            action="store_true",
            help="also retry scans whose failure is permanent (an unusable photo, a refused URL)",
        )

    def handle(self, *args, dry_run: bool, force: bool, **options):
        from scans.models import DeadLetter

        pending = DeadLetter.objects.pending().count()
        try:
            depth = dead_letter_depth()
        except Exception as exc:  # the broker being away must not stop the DB's redrive
            depth = f"? ({type(exc).__name__})"
        where = (
            f"{depth} on scan.ai.dlq" if broker_has_dead_lettering() else "no DLQ on this broker"
        )
        self.stdout.write(f"Dead letters: {pending} pending in the DB; {where}.")
        if dry_run:
            return
        report = services.redrive_dead_letters(actor="manage.py redrive_dlq", force=force)
        if report.queue_error:
            self.stdout.write(
                self.style.WARNING(
                    f"Could not read scan.ai.dlq ({report.queue_error}); redrove the dead "
                    "letters recorded in the DB. Run it again once the broker answers."
                )
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Drained {report.taken + report.parked} message(s); "
                f"re-enqueued {report.retried} scan(s)."
            )
        )
        if report.parked:
            self.stdout.write(
                self.style.WARNING(
                    f"Set aside {report.parked} unreadable message(s) (no scan id, or no such "
                    f"scan) on {PARKED_DEAD_LETTER_QUEUE.name}; each is a dead letter in the DB."
                )
            )
        if report.permanent:
            codes = ", ".join(f"{code}: {n}" for code, n in sorted(report.permanent.items()))
            self.stdout.write(
                self.style.WARNING(
                    f"Skipped {sum(report.permanent.values())} scan(s) whose failure is "
                    f"permanent ({codes}); --force retries them anyway."
                )
            )
        if report.without_scan:
            self.stdout.write(
                self.style.WARNING(
                    f"{report.without_scan} dead letter(s) name no scan: review them in the "
                    "admin (Scans → Dead letters) and dismiss them."
                )
            )
        if report.running:
            self.stdout.write(
                f"{report.running} dead letter(s) belong to scans queued or running again; "
                "their end settles them."
            )
        if report.resolved:
            self.stdout.write(f"Resolved {report.resolved} dead letter(s) of completed scans.")
