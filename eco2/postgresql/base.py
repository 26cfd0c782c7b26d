"""Django's PostgreSQL backend whose connection pool checks a connection only after it sat idle.

With a pool (DB_POOL_MAX_SIZE), Django has psycopg_pool check every connection it hands out
when CONN_HEALTH_CHECKS is on: an empty query, a round trip for every request of the web and
for every step of a threads-pool worker (twice a step: the connection goes back to the pool
during the provider's call, eco2.db.release_db_connection). A connection handed back a moment
ago was working then, so here it is checked only when it sat in the pool longer than
DB_POOL_CHECK_AFTER_IDLE, the policy of the prefork children's kept connections
(WORKER_DB_CHECK_AFTER_IDLE, eco2/celery.py). A connection that fails its check is dropped
and another one taken, as the pool's own check does. The settings turn the pool's check off
(CONN_HEALTH_CHECKS) where they choose this engine.

The trade, stated: PostgreSQL restarting within that moment of a connection's return fails
the one request or step that takes it next, as it fails the ones running at that instant (a
request answers 503, a step retries: docs/reliability.md).
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from django.conf import settings
from django.db.backends.postgresql import base

# When each pooled connection was last handed back to the pool, in working order (a broken one
# is not taken back: psycopg_pool discards a connection whose session failed).
_returned_at: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        pool = self.pool  # type: ignore[attr-defined]  # Django 5.1's pool: not in the stubs
        if not pool:
            return connection
        # all the pool's connections may be broken (PostgreSQL restarted): one more try each
        for _ in range(pool.max_size):
            if self._returned_lately(connection) or self._works(connection):
                return connection
            pool.putconn(connection)  # closed: the pool drops it and opens a new one
            connection = super().get_new_connection(conn_params)
        return connection  # fresh from the pool; if it fails too, its first query says why

    def _close(self) -> None:
        if self.pool and self.connection is not None and not self.connection.closed:  # type: ignore[attr-defined]
            _returned_at[self.connection] = time.monotonic()
        super()._close()  # type: ignore[misc]  # not in the stubs

    @staticmethod
    def _returned_lately(connection: Any) -> bool:
        returned = _returned_at.get(connection)
        return returned is not None and (
            time.monotonic() - returned < settings.DB_POOL_CHECK_AFTER_IDLE
        )

    @staticmethod
    def _works(connection: Any) -> bool:
        """The pool's own check (psycopg_pool.ConnectionPool.check_connection); a connection
        that fails it is closed."""
        from psycopg import Error
        from psycopg_pool import ConnectionPool

        try:
            ConnectionPool.check_connection(connection)
        except Error:
            connection.close()
            return False
        return True
