"""The web process's plumbing that bench/api_latency.py found: work after the response, the
middleware order under ASGI, uvicorn's keep-alive sockets, startup objects out of the garbage
collector's way, one Redis pool per process, the PostgreSQL connection pool setting, and task
events off on threaded worker pools."""

import asyncio
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import uvicorn
from django.conf import settings
from django.http import HttpResponse
from django.test import RequestFactory

from eco2.after_response import AfterResponseMiddleware, run_after_response
from eco2.celery import (
    _no_task_events_on_threaded_pools,
    _quick_gil_handoff_on_threads_pools,
    pool_name,
)
from eco2.redis_pool import ProcessConnectionPool

ROOT = Path(__file__).resolve().parents[2]


# --- run_after_response ---------------------------------------------------------------------
# closing a response sends request_finished, which closes DB connections
@pytest.mark.django_db
def test_work_queued_in_a_request_runs_only_once_the_response_is_closed():
    calls = []

    def view(request):
        run_after_response(lambda: calls.append("publish"))
        calls.append("view")
        return HttpResponse(status=202)

    response = AfterResponseMiddleware(view)(RequestFactory().post("/api/v1/scans"))

    assert calls == ["view"], "the client gets its response before the queued work runs"
    response.close()  # what the server does after the last byte went out
    assert calls == ["view", "publish"]
    response.close()
    assert calls == ["view", "publish"], "runs once"


def test_outside_a_request_the_work_runs_at_once():
    calls = []
    run_after_response(lambda: calls.append("now"))
    assert calls == ["now"]


# closing a response sends request_finished, which closes DB connections
@pytest.mark.django_db
def test_a_failing_piece_of_work_is_logged_and_the_rest_still_runs(caplog):
    calls = []

    def broken():
        raise RuntimeError("broker gone")

    def view(request):
        run_after_response(broken)
        run_after_response(lambda: calls.append("second"))
        return HttpResponse(status=202)

    AfterResponseMiddleware(view)(RequestFactory().get("/")).close()

    assert calls == ["second"]
    assert "after-response work failed" in caplog.text


def test_no_request_leaves_work_behind_for_the_next_code_in_its_thread():
    AfterResponseMiddleware(lambda request: HttpResponse())(RequestFactory().get("/"))
    calls = []
    run_after_response(lambda: calls.append("later code"))
    assert calls == ["later code"]


def test_the_sync_only_middlewares_are_innermost():
    """Under ASGI the innermost middleware sets the chain's mode: sync-only ones anywhere else
    make every async-capable middleware outside them hop between loop and thread twice."""
    assert settings.MIDDLEWARE[-2:] == [
        "eco2.after_response.AfterResponseMiddleware",
        "scans.middleware.UploadSizeLimitMiddleware",
    ]


# --- uvicorn: keep-alive connections get TCP_NODELAY with --workers -------------------------
def _nodelay_of_accepted_connection(sock: socket.socket) -> int:
    async def accept_one() -> int:
        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[int] = loop.create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                raw = transport.get_extra_info("socket")
                accepted.set_result(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        listener = await loop.create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        try:
            return await asyncio.wait_for(accepted, 5)
        finally:
            writer.close()
            listener.close()

    return asyncio.run(accept_one())


def test_uvicorns_socket_gives_keep_alive_connections_tcp_nodelay():
    """uvicorn < 0.55 bound its --workers socket with proto 0, so asyncio left Nagle on and every
    keep-alive request waited ~40 ms for a delayed ACK (uvicorn #3149; pyproject pins >= 0.55)."""
    config = uvicorn.Config(app="eco2.asgi:application", host="127.0.0.1", port=0)
    sock = config.bind_socket()
    assert sock.proto == socket.IPPROTO_TCP
    assert _nodelay_of_accepted_connection(sock), "Nagle would delay keep-alive responses ~40 ms"


def test_a_web_process_starts_with_its_views_loaded_and_frozen_out_of_full_collections():
    """A full collection walking the ~130k objects every web process creates at start cost
    55-70 ms in the middle of a request every few hundred uploads: the upload's p99. What
    eco2.asgi leaves for the collector is only what requests create afterwards."""
    probe = (
        "import gc, sys\n"
        "import eco2.asgi\n"
        "print(gc.get_freeze_count(), 'scans.api.scans' in sys.modules, len(gc.get_objects()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "eco2.settings"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    frozen, views_loaded, walked = int(out[0]), out[1] == "True", int(out[2])
    assert views_loaded, "the first upload would load the URLconf, after the freeze"
    assert frozen > 50_000
    # what a full collection still walks: a few objects made after the freeze, not ~130k
    assert walked < frozen / 20, (walked, frozen)


# --- Django's Redis cache: one pool per process ----------------------------------------------
def test_cache_backends_share_one_redis_pool_per_url_and_options():
    url = "redis://127.0.0.1:6379/14"
    first = ProcessConnectionPool.from_url(url, socket_timeout=1)
    again = ProcessConnectionPool.from_url(url, socket_timeout=1)
    other = ProcessConnectionPool.from_url(url, socket_timeout=2)
    assert first is again, "a backend built in another request context reuses the connections"
    assert other is not first


# --- the PostgreSQL connection pool setting ---------------------------------------------------
def _database_settings(**env: str) -> dict:
    script = (
        "import json, django; from django.conf import settings; django.setup(); "
        "d = settings.DATABASES['default']; "
        "print(json.dumps({'options': d.get('OPTIONS', {}), 'conn_max_age': d['CONN_MAX_AGE'], "
        "'no_server_side_cursors': d.get('DISABLE_SERVER_SIDE_CURSORS', False)}))"
    )
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "DB_POOL_MAX_SIZE")
    }
    environment.update(DJANGO_SETTINGS_MODULE="eco2.settings", **env)
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_db_pool_max_size_gives_postgresql_a_connection_pool():
    pooled = _database_settings(
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/test", DB_POOL_MAX_SIZE="8"
    )
    assert pooled["options"]["pool"] == {"min_size": 1, "max_size": 8, "timeout": 10.0}
    assert pooled["conn_max_age"] == 0, "Django refuses persistent connections with a pool"
    plain = _database_settings(DATABASE_URL="postgres://postgres@127.0.0.1:5432/test")
    assert "pool" not in plain["options"]


def test_behind_pgbouncer_server_side_cursors_can_be_turned_off():
    database = "postgres://postgres@127.0.0.1:5432/test"
    assert not _database_settings(DATABASE_URL=database)["no_server_side_cursors"]
    behind_pgbouncer = _database_settings(
        DATABASE_URL=database, DB_DISABLE_SERVER_SIDE_CURSORS="1", DB_POOL_MAX_SIZE="8"
    )
    assert behind_pgbouncer["no_server_side_cursors"]
    assert behind_pgbouncer["options"]["pool"]["max_size"] == 8  # the two go together


def test_db_pool_max_size_is_ignored_on_sqlite():
    embedded = _database_settings(DB_POOL_MAX_SIZE="8")
    assert "pool" not in embedded["options"]


# --- worker task events -----------------------------------------------------------------------
def _conf(*, confirms: bool) -> SimpleNamespace:
    return SimpleNamespace(
        broker_transport_options={"confirm_publish": True} if confirms else {},
        worker_send_task_events=True,
        worker_pool="prefork",
    )


def test_pool_names_come_from_the_class_the_worker_cli_passes():
    from celery.concurrency import get_implementation

    assert pool_name(get_implementation("threads")) == "threads"
    assert pool_name(get_implementation("prefork")) == "prefork"
    assert pool_name("gevent") == "gevent"


@pytest.mark.parametrize("pool", ["threads", "gevent"])
def test_threaded_pools_send_no_task_events_while_publishes_are_confirmed(pool):
    from celery.concurrency import get_implementation

    # as `celery worker --pool=threads` passes it: the class as "pool", "pool_cls" None
    options = {"pool": get_implementation(pool), "pool_cls": None}
    conf = _conf(confirms=True)
    _no_task_events_on_threaded_pools(sender="ai@host", conf=conf, options=options)
    assert conf.worker_send_task_events is False


def test_prefork_workers_keep_task_events():
    conf = _conf(confirms=True)
    _no_task_events_on_threaded_pools(
        sender="default@host", conf=conf, options={"pool_cls": "prefork"}
    )
    assert conf.worker_send_task_events is True


def test_without_publisher_confirms_threaded_pools_keep_task_events():
    conf = _conf(confirms=False)  # the embedded filesystem broker
    _no_task_events_on_threaded_pools(sender="w@host", conf=conf, options={"pool_cls": "threads"})
    assert conf.worker_send_task_events is True


@pytest.mark.parametrize(("pool", "expected"), [("threads", 0.001), ("prefork", None)])
def test_a_threads_pool_hands_the_gil_over_sooner(pool, expected, settings):
    from celery.concurrency import get_implementation

    default = sys.getswitchinterval()
    settings.WORKER_THREADS_SWITCH_INTERVAL = 0.001
    try:
        _quick_gil_handoff_on_threads_pools(
            sender="w@host", conf=_conf(confirms=True), options={"pool": get_implementation(pool)}
        )
        assert sys.getswitchinterval() == pytest.approx(expected or default)
    finally:
        sys.setswitchinterval(default)
