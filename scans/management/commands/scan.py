import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

from scans import services
from scans.creation_rate import ScanRateLimited
from scans.errors import error_message
from scans.images import validate_scan_image
from scans.models import Scan, ScanStatus
from scans.rules import current_rulebase
from scans.serializers import scan_result

# Exit codes: 0 the guidance was printed; 1 the scan failed (or bad arguments); 2 no result in
# --timeout; 3 the scan asks which one it is (needs_input) and nobody answered: not a terminal
# and no --choose. The scan then waits for an answer on its page or through the API.
EXIT_FAILED, EXIT_TIMEOUT, EXIT_NEEDS_INPUT = 1, 2, 3


class Command(BaseCommand):
    help = (
        "Scan a photo through the same pipeline as the web and API, and print the guidance. "
        "Exit codes: 1 failed, 2 timed out, 3 the scan asks which one it is and was not answered."
    )
    stealth_options = ("stdin",)  # tests hand in a terminal of their own

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
        parser.add_argument(
            "--choose",
            metavar="CODE",
            default=None,
            help="if the scan is not sure and asks which one it is, answer with this category "
            "code (one of the choices it prints, or any code of /api/v1/categories); without "
            "it the command asks on a terminal, and elsewhere exits with code 3",
        )
        parser.add_argument(
            "--language",
            default=settings.LANGUAGE_CODE,
            choices=[code for code, _name in settings.LANGUAGES],
            help="the language the guidance is written in (default: %(default)s)",
        )

    def handle(
        self,
        *args,
        path: Path,
        hint: str,
        user: str | None,
        timeout: float,
        choose: str | None = None,
        language: str | None = None,
        **options,
    ):
        self.stdin = options.get("stdin") or sys.stdin
        owner = self._owner(user)
        if not path.is_file():
            raise CommandError(f"{path} is not a file")
        if choose is not None and choose not in current_rulebase().by_code:
            raise CommandError(
                f"--choose {choose!r} is not a category code (see /api/v1/categories)"
            )
        with path.open("rb") as fh:
            upload = File(fh, name=path.name)
            try:
                validate_scan_image(upload)
            except ValidationError as exc:
                raise CommandError(f"{path}: {' '.join(exc.messages)}") from exc
            try:
                scan = services.create_scan(owner=owner, image=upload, hint=hint, language=language)
            except (services.PipelineBusy, ScanRateLimited) as refused:
                raise CommandError(
                    f"{refused.message} (retry in {refused.retry_after} s)"
                ) from refused
        self.stdout.write(f"scan {scan.id} queued")
        self._follow(scan.id, timeout, choose)

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

    def _follow(self, scan_id, timeout: float, choose: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while True:
            scan = Scan.objects.select_related("owner").get(pk=scan_id)
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
                sys.exit(EXIT_FAILED)
            if scan.status == ScanStatus.NEEDS_INPUT:
                self._answer(scan, choose)
                choose = None  # asked again (a hint's run): ask the person, not the flag
                deadline, last = time.monotonic() + timeout, None
                continue
            if time.monotonic() > deadline:
                self.stderr.write(
                    self.style.ERROR(
                        f"no result after {timeout:.0f}s; is a worker running? (`make run` starts one)"
                    )
                )
                sys.exit(EXIT_TIMEOUT)
            time.sleep(0.3)

    def _answer(self, scan: Scan, choose: str | None) -> None:
        """Print the question and its choices; answer with --choose, or ask on a terminal; else
        exit with EXIT_NEEDS_INPUT, the scan left waiting for an answer elsewhere."""
        choices = scan.choices or []
        self.stdout.write("")
        self.stdout.write(
            self.style.WARNING("어느 쪽인가요? · Which one is it? (the scan needs your choice)")
        )
        for number, choice in enumerate(choices, start=1):
            self.stdout.write(
                f"  {number}. {choice['item']} ({choice['item_en']}) → "
                f"{choice['category_ko']} ({choice['category_en']})  [{choice['category_code']}]"
            )
        self.stdout.write("  … or any category code of /api/v1/categories")
        if choose is None and self.stdin.isatty():
            choose = self._prompt(choices)
        if choose is None:
            page = reverse("scans:detail", args=[scan.id])
            api = reverse("api:scan-choose", args=[scan.id])
            self.stderr.write(
                self.style.WARNING(
                    f"scan {scan.id} needs your choice: scan again with --choose CODE, or answer "
                    f'on its page ({page}) or with POST {api} {{"category_code": …}}'
                )
            )
            sys.exit(EXIT_NEEDS_INPUT)
        item = next((c["item"] for c in choices if c["category_code"] == choose), "")
        try:
            services.choose_category(scan, category_code=choose, item=item, actor="cli")
        except (services.InvalidAnswer, services.ScanNotWaiting) as refused:
            raise CommandError(refused.message) from refused
        self.stdout.write(f"chose {choose}; going on")

    def _prompt(self, choices: list[dict]) -> str | None:
        """A choice's number or a category code from the terminal; None for an empty line."""
        codes = current_rulebase().by_code
        while True:
            self.stdout.write(
                "번호 또는 분류 코드 · number or category code (Enter: stop): ", ending=""
            )
            self.stdout.flush()
            line = self.stdin.readline()
            answer = line.strip()
            if not answer:
                return None
            if answer.isdigit() and 1 <= int(answer) <= len(choices):
                return choices[int(answer) - 1]["category_code"]
            if answer in codes:
                return answer
            self.stdout.write(f"  {answer!r}: not a number from the list or a category code")

    def _print_guidance(self, scan: Scan) -> None:
        result = scan_result(scan)
        answer = result["answer"] or {}
        cls = result["classification"] or {}
        self.stdout.write("")
        if result["outcome"] == "classified":
            chosen = " (직접 고름 · you chose this)" if cls.get("chosen_by") == "user" else ""
            self.stdout.write(
                self.style.SUCCESS(
                    f"{cls.get('major_category')} › {cls.get('middle_category')} › "
                    f"{cls.get('minor_category') or '-'}{chosen}"
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
