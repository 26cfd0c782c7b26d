"""Who may see what (IDOR): another user gets 404 on every scan, batch, event-stream and photo
route, an anonymous caller is refused, staff see everything."""

from __future__ import annotations

import pytest
from django.test import Client

from scans.models import Scan, ScanBatch
from tests.scans.api.helpers import SCANS_URL, client_for

# --- who may see what (IDOR) ----------------------------------------------------------------------


@pytest.fixture
def owned(api_client, user, photo):
    """A scan uploaded by ``user`` (a real stored photo) and a batch of theirs."""
    task_id = api_client.post(SCANS_URL, {"image": photo()}, format="multipart").json()["task_id"]
    batch = ScanBatch.objects.create(owner=user)
    Scan.objects.create(owner=user, image="x.jpg", batch=batch)
    return {"scan": task_id, "batch": str(batch.id)}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "route",
    [
        "/api/v1/scans/{scan}",
        "/api/v1/scans/{scan}/events",
        "/api/v1/batches/{batch}",
    ],
)
def test_another_user_gets_404_on_every_api_route(owned, other_user, route):
    response = client_for(other_user).get(route.format(**owned))
    assert response.status_code == 404
    assert owned["scan"] not in response.content.decode(errors="replace")


@pytest.mark.django_db
@pytest.mark.parametrize(
    "route",
    [
        "/api/v1/scans",
        "/api/v1/scans/{scan}",
        "/api/v1/scans/{scan}/events",
        "/api/v1/batches/{batch}",
    ],
)
def test_without_login_every_route_refuses(owned, anon_client, route):
    assert anon_client.get(route.format(**owned)).status_code in (401, 403)


@pytest.mark.django_db
def test_the_photo_route_is_owner_and_staff_only(owned, user, other_user, staff_user):
    url = f"/scans/{owned['scan']}/image"
    browser = Client()
    assert browser.get(url).status_code == 302  # to the login page
    browser.force_login(other_user)
    assert browser.get(url).status_code == 404
    browser.force_login(user)
    assert browser.get(url).status_code == 200
    browser.force_login(staff_user)
    assert browser.get(url).status_code == 200


@pytest.mark.django_db
def test_list_is_own_scans_only_even_with_all_for_non_staff(owned, other_user, user):
    intruder = client_for(other_user)
    assert intruder.get(SCANS_URL).json()["count"] == 0
    assert intruder.get(SCANS_URL + "?all=1").json()["count"] == 0
    assert client_for(user).get(SCANS_URL + "?all=1").json()["count"] == 2


@pytest.mark.django_db
def test_staff_see_all_with_all_1_and_any_detail(owned, staff_user):
    staff = client_for(staff_user)
    assert staff.get(SCANS_URL).json()["count"] == 0  # their own by default
    assert staff.get(SCANS_URL + "?all=1").json()["count"] == 2
    assert staff.get(f"{SCANS_URL}/{owned['scan']}").status_code == 200
    assert staff.get(f"/api/v1/batches/{owned['batch']}").status_code == 200


@pytest.mark.django_db
def test_token_auth_reaches_only_own_scans(owned, other_user, anon_client):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=other_user)
    anon_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert anon_client.get(SCANS_URL).status_code == 200
    assert anon_client.get(f"{SCANS_URL}/{owned['scan']}").status_code == 404
    anon_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert anon_client.get(SCANS_URL).status_code in (401, 403)
