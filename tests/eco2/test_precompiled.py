"""eco2.db.get_precompiled: a hot path's load by primary key, compiled once per process."""

import uuid

import pytest
from django.db import connection
from django.db.models import Value
from django.test.utils import CaptureQueriesContext

from eco2.db import get_precompiled
from scans.models import Scan
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _scans_with_label(pk):
    return Scan.objects.filter(pk=pk).annotate(label=Value("loaded"))


def test_it_loads_the_row_the_orm_loads_with_its_annotations():
    owner = UserFactory()
    scan = Scan.objects.create(
        owner=owner, image="scans/a.jpg", hint="페트병", usage={"vision": {"input_tokens": 3}}
    )
    loaded = get_precompiled("test.scan_with_label", _scans_with_label, str(scan.pk))
    orm = _scans_with_label(scan.pk).get()
    assert loaded is not None and loaded.pk == scan.pk
    fields = [field.attname for field in Scan._meta.concrete_fields]
    assert {name: getattr(loaded, name) for name in fields} == {
        name: getattr(orm, name) for name in fields
    }
    assert loaded.label == "loaded"
    assert loaded.usage == {"vision": {"input_tokens": 3}}  # JSON decoded, as the ORM does


def test_each_call_asks_for_its_own_key_and_a_missing_row_is_none():
    owner = UserFactory()
    first, second = (Scan.objects.create(owner=owner, image=f"scans/{n}.jpg") for n in "ab")
    assert get_precompiled("test.scan_by_key", _scans_with_label, first.pk).pk == first.pk
    assert get_precompiled("test.scan_by_key", _scans_with_label, str(second.pk)).pk == second.pk
    assert get_precompiled("test.scan_by_key", _scans_with_label, uuid.uuid4()) is None


def test_the_query_is_built_once_and_sent_as_one_statement():
    owner = UserFactory()
    scan = Scan.objects.create(owner=owner, image="scans/a.jpg")
    built = []

    def rows(pk):
        built.append(pk)
        return _scans_with_label(pk)

    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            assert get_precompiled("test.scan_built_once", rows, scan.pk).pk == scan.pk
    assert len(built) == 1
    assert len(queries.captured_queries) == 3


def test_an_integer_key():
    owner = UserFactory()
    loaded = get_precompiled("test.user", lambda pk: type(owner).objects.filter(pk=pk), owner.pk)
    assert loaded == owner and loaded.email == owner.email
