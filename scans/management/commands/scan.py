import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.management.base import BaseCommand, CommandError

from scans import services
from scans.creation_rate import ScanRateLimited
from scans.errors import error_message
from scans.images import validate_scan_image
from scans.models import Scan, ScanStatus
from scans.serializers import scan_result


class Command(BaseCommand):
    help = "Scan a photo through the same pipeline as the web and API, and print the guidance."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--hint", default="", help='e.g. "투명 페트병, 라벨 있음"')
        parser.add_argument(
            "--user",
            default=None,
            help="owner of the scan (default: DEMO_USERNAME, else the one local admin account "
            "that `make run` created)",
        )
        parser.add_argument(
            "--timeout", type=float, default=120.0, help="seconds to wait for a worker"
        )

    def handle(self, *args, path: Path, hint: str, user: str | None, timeout: float, **options):
        owner = self._owner(user)
        if not path.is_file():
            raise CommandError(f"{path} is not a file")
        with path.open("rb") as fh:
            upload = File(fh, name=path.name)
            try:
                validate_scan_image(upload)
            except ValidationError as exc:
                raise CommandError(f"{path}: {' '.join(exc.messages)}") from exc
            try:
                scan = services.create_scan(owner=owner, image=upload, hint=hint)
            except (services.PipelineBusy, ScanRateLimited) as refused:
                raise CommandError(
                    f"{refused.message} (retry in {refused.retry_after} s)"
                ) from refused
        self.stdout.write(f"scan {scan.id} queued")
        self._follow(scan.id, timeout)

    def _owner(self, username: str | None):
        """--user; else the local account: DEMO_USERNAME, or, when this shell does not have the
        DEMO_USERNAME `make run` had (`DEMO_USERNAME=alice make run`), the only superuser."""
        users = get_user_model().objects
        if username:
            owner = users.filter(username=username).first()
            if owner is None:
                raise CommandError(f"no user {username!r}")
            return owner
        owner = users.filter(username=settings.DEMO_USERNAME).first()
        if owner is None:
            admins = list(users.filter(is_superuser=True)[:2])
            if len(admins) != 1:
                raise CommandError(
                    f"no user {settings.DEMO_USERNAME!r} (DEMO_USERNAME) and no single local "
                    "admin account: pass --user NAME, or set DEMO_USERNAME as for `make run`"
                )
            owner = admins[0]
            self.stdout.write(f"scanning as {owner.get_username()} (the local admin account)")
        return owner

    def _follow(self, scan_id, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while True:
            scan = Scan.objects.get(pk=scan_id)
            state = (scan.status, scan.step, scan.progress)
            if state != last:
                bar = "#" * (scan.progress // 5)
                self.stdout.write(
                    f"  [{bar:<20}] {scan.progress:3d}%  {scan.status:<10} {scan.step}"
                )
                last = state
            if scan.status == ScanStatus.COMPLETED:
                self._print_guidance(scan)
                return
            if scan.status == ScanStatus.FAILED:
                # the operator's terminal gets the reason and the technical detail
                self.stderr.write(
                    self.style.ERROR(
                        f"scan failed ({scan.error_code}): {error_message(scan.error_code)}"
                        f"\n  detail: {scan.error_message}"
                    )
                )
                sys.exit(1)
            if time.monotonic() > deadline:
                self.stderr.write(
                    self.style.ERROR(
                        f"no result after {timeout:.0f}s; is a worker running? (`make run` starts one)"
                    )
                )
                sys.exit(2)
            time.sleep(0.3)

    def _print_guidance(self, scan: Scan) -> None:
        result = scan_result(scan)
        answer = result["answer"] or {}
        cls = result["classification"] or {}
        self.stdout.write("")
        if result["outcome"] == "classified":
            self.stdout.write(
                self.style.SUCCESS(
                    f"{cls.get('major_category')} › {cls.get('middle_category')} › {cls.get('minor_category') or '-'}"
                )
            )
        else:
            self.stdout.write(self.style.WARNING("분류하지 못했어요 (unclassified)"))
        for number, step in enumerate(answer.get("disposal_steps", []), start=1):
            self.stdout.write(f"  {number}. {step}")
        for fix in answer.get("insufficiencies", []):
            self.stdout.write(f"  ! {fix}")
        self.stdout.write(answer.get("user_answer", ""))
        self.stdout.write(f"(provider: {result['provider']})")
