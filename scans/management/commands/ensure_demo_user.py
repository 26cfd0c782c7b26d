import os

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from scans.providers import get_vision_provider, vision_sees_photos


class Command(BaseCommand):
    help = "Create the local account from DEMO_USERNAME / DEMO_PASSWORD if it does not exist yet."

    def add_arguments(self, parser):
        parser.add_argument(
            "--banner", action="store_true", help="also print where to open Eco² and how to log in"
        )

    def handle(self, *args, banner: bool, **options):
        User = get_user_model()
        username, password = settings.DEMO_USERNAME, settings.DEMO_PASSWORD
        # the local account may use the admin too (task history, rule base edits)
        user, created = User.objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(password)
            user.save()
        if not banner:
            self.stdout.write(f"Local account {username!r} {'created' if created else 'exists'}.")
            return
        port = os.environ.get("PORT", "8000")
        login = (
            f"{username} / {password}"
            if created or user.check_password(password)
            else f"{username} (password changed)"
        )
        mode = get_vision_provider().name
        vision = ""
        if not vision_sees_photos():
            mode += " (cannot see photos: classifies from the hint text)"
            vision = (
                "  vision      off. To let Eco² see photos, set OPENAI_API_KEY (OpenAI), or\n"
                "              OPENAI_BASE_URL + OPENAI_API_KEY + OPENAI_VISION_MODEL for any\n"
                "              OpenAI-compatible server (vLLM, Ollama, LM Studio), then restart.\n"
            )
        self.stdout.write(
            self.style.SUCCESS(
                "\n"
                f"  Eco² → http://localhost:{port}/\n"
                f"  log in as   {login}\n"
                f"  admin       http://localhost:{port}/admin/\n"
                f"  API docs    http://localhost:{port}/api/v1/docs\n"
                f"  provider    {mode}\n"
                f"{vision}"
            )
        )
