"""A scan keeps the language it was made in (the request's), and its answer step asks for it.

Every way of making a scan is covered: the API, a batch, the upload page and `manage.py scan`.
The guidance itself in English, through a real worker and the OpenAI provider, is in
tests/integration/pipeline/test_pipeline_openai.py.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.test import Client

from scans import services
from scans.models import Scan
from scans.providers.base import Answer
from tests.conftest import make_photo_bytes

pytestmark = pytest.mark.django_db

SCANS_URL = "/api/v1/scans"


@pytest.mark.parametrize(
    ("accept_language", "stored"),
    [("en", "en"), ("en-US,en;q=0.9", "en"), ("ko-KR", "ko"), ("fr", "ko"), (None, "ko")],
)
def test_an_api_upload_keeps_the_request_language(api_client, photo, accept_language, stored):
    headers = {"HTTP_ACCEPT_LANGUAGE": accept_language} if accept_language else {}
    response = api_client.post(SCANS_URL, {"image": photo()}, format="multipart", **headers)

    assert response.status_code == 202, response.content
    assert Scan.objects.get(pk=response.json()["task_id"]).language == stored
    assert api_client.get(f"{SCANS_URL}/{response.json()['task_id']}").json()["language"] == stored


def test_a_batch_keeps_the_request_language_for_every_photo(api_client, photo):
    created = api_client.post(
        f"{SCANS_URL}/batch",
        {"images": [photo(), photo()]},
        format="multipart",
        HTTP_ACCEPT_LANGUAGE="en",
    ).json()
    assert set(Scan.objects.filter(pk__in=created["task_ids"]).values_list("language", flat=True)) == {"en"}  # fmt: skip


def test_the_upload_page_keeps_the_page_language(user, photo):
    client = Client()
    client.force_login(user)
    response = client.post("/", {"image": photo(), "hint": "can"}, HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 302
    assert Scan.objects.get(owner=user).language == "en"


@pytest.mark.parametrize(("options", "stored"), [({"language": "en"}, "en"), ({}, "ko")])
def test_the_command_line_takes_a_language(user, tmp_path, options, stored):
    path = tmp_path / "can.jpg"
    path.write_bytes(make_photo_bytes())
    with pytest.raises(SystemExit):  # no worker: it stops waiting at once
        call_command(
            "scan",
            str(path),
            user=user.username,
            timeout=0.1,
            stdout=io.StringIO(),
            stderr=io.StringIO(),
            **options,
        )
    assert Scan.objects.get(owner=user).language == stored


class RecordingAnswerProvider:
    name = "recording"
    requests: list = []

    def compose(self, request):
        type(self).requests.append(request)
        return Answer(disposal_steps=[], insufficiencies=[], user_answer="ok", provider=self.name)


def test_the_answer_step_asks_the_provider_for_the_scans_language(rulebase, user, photo, settings):
    from scans.providers import _build

    settings.SCAN_ANSWER_PROVIDER = "tests.scans.test_scan_language.RecordingAnswerProvider"
    RecordingAnswerProvider.requests = []
    _build.cache_clear()
    try:
        scan = services.create_scan(owner=user, image=photo(), hint="콜라 캔", language="en")
        for step in (services.run_vision_step, services.run_rule_step, services.run_answer_step):
            step(scan.id)
    finally:
        _build.cache_clear()

    (request,) = RecordingAnswerProvider.requests
    assert request.language == "en"
    scan.refresh_from_db()
    assert scan.status == "completed" and scan.answer_cache_hit is False
