import pytest
from django.db import connection


@pytest.fixture
def test_db_url() -> str:
    """The test database's URL, as bench/common.py's PostgreSQL helpers take it."""
    settings = connection.settings_dict
    return (
        f"postgres://{settings['USER'] or 'postgres'}@{settings['HOST'] or '127.0.0.1'}:"
        f"{settings['PORT'] or 5432}/{settings['NAME']}"
    )
