"""The admin as staff use it: scan list with filters, scan detail, rule base editing."""

import pytest
from django.test import Client

from scans import services
from scans.models import Category

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(db):
    from .factories import UserFactory

    client = Client()
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_scan_list_filters_and_detail(admin_client_, rulebase, user, photo):
    scan = services.create_scan(owner=user, image=photo(), hint="캔")
    metal = Category.objects.get(code="metal")

    for query in (
        "",
        "?status__exact=queued",
        "?step__exact=queued",
        f"?category__id__exact={metal.id}",
        "?created_at__year=2026",
    ):
        response = admin_client_.get(f"/admin/scans/scan/{query}")
        assert response.status_code == 200, query
    detail = admin_client_.get(f"/admin/scans/scan/{scan.id}/change/")
    assert detail.status_code == 200
    assert "캔" in detail.content.decode()


def test_rule_base_is_editable_in_the_admin(admin_client_, rulebase):
    paper = Category.objects.get(code="paper")
    page = admin_client_.get(f"/admin/scans/category/{paper.id}/change/")
    assert page.status_code == 200
    assert "text_ko" in page.content.decode()


def test_non_staff_cannot_open_the_admin(client, user):
    client.force_login(user)
    assert client.get("/admin/scans/scan/").status_code == 302
