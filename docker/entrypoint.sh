#!/bin/sh
# Eco² image entrypoint: one image, every role. The first argument names the role; anything
# else is run as given (e.g. `python manage.py createsuperuser`, `sh`).
#
#   web            uvicorn ASGI server on $PORT (8000); extra args go to it
#   worker ARGS    celery worker; ARGS choose queues, pool and concurrency, e.g.
#                  worker --queues=scan.ai.pipeline --pool=threads --concurrency=32
#   beat           celery beat (django-celery-beat's DatabaseScheduler); run exactly ONE
#   flower         Flower on $FLOWER_PORT (5555); refuses to start without FLOWER_BASIC_AUTH
#   migrate        one-shot: migrate, load the rule base if the DB has none, deploy checks
#   metrics        the per-host Prometheus exporter of worker task metrics (eco2.metrics)
#
# Every role runs with `exec`, so the server is the process that receives SIGTERM.
set -eu

role="${1:-web}"
[ "$#" -gt 0 ] && shift

case "$role" in
  web)
    # --proxy-headers: X-Forwarded-For/-Proto are trusted from FORWARDED_ALLOW_IPS only
    # (uvicorn reads that variable; default 127.0.0.1). --timeout-graceful-shutdown: open
    # Server-Sent Events streams never end by themselves, so a stop would otherwise wait for
    # the SIGKILL; browsers reconnect and polling takes over.
    # DB_POOL_MAX_SIZE: each web process shares a few PostgreSQL connections among requests.
    export DB_POOL_MAX_SIZE="${DB_POOL_MAX_SIZE:-8}"
    exec uvicorn eco2.asgi:application \
      --host 0.0.0.0 --port "${PORT:-8000}" \
      --workers "${WEB_CONCURRENCY:-2}" \
      --proxy-headers \
      --lifespan off \
      --timeout-graceful-shutdown "${WEB_GRACEFUL_TIMEOUT:-10}" \
      --no-server-header \
      "$@"
    ;;
  worker)
    # SIGTERM (docker stop, Kubernetes) → soft shutdown: running tasks get
    # worker_soft_shutdown_timeout (20 s) to finish, then the cold shutdown cancels and requeues
    # the rest (late acks). Without the remap, SIGTERM is Celery's *warm* shutdown, which waits
    # for every running task however long, until the orchestrator's SIGKILL.
    export REMAP_SIGTERM="${REMAP_SIGTERM:-SIGQUIT}"
    # --statedb keeps revoked task ids across restarts of this container (admin → Terminate).
    mkdir -p "${CELERY_STATE_DIR:-/app/var/state}"
    exec celery -A eco2 worker \
      --loglevel="${LOG_LEVEL:-INFO}" \
      --statedb="${CELERY_STATE_DIR:-/app/var/state}/worker.db" \
      "$@"
    ;;
  beat)
    # The schedule lives in the database (beat_scheduler in eco2/celery.py): no local file.
    exec celery -A eco2 beat --loglevel="${LOG_LEVEL:-INFO}" "$@"
    ;;
  flower)
    # flowerconfig.py (in the working directory, /app) reads FLOWER_BASIC_AUTH
    exec celery -A eco2 flower --port="${FLOWER_PORT:-5555}" "$@"
    ;;
  migrate)
    python manage.py migrate --noinput
    # --if-empty keeps rules edited in the admin; it also warms the alias embedding cache
    python manage.py load_rulebase --if-empty
    # prints deployment warnings (HTTPS, cookies, HSTS) into the job's log; fails on errors only
    python manage.py check --deploy
    exit 0
    ;;
  metrics)
    exec python -m eco2.metrics --port "${METRICS_PORT:-9808}" "$@"
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
