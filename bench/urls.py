"""The project's URLs plus the endpoints bench/api_latency.py measures the upload against.

``/bench/bare`` is an authenticated DRF view that returns 202 and does nothing else: the
baseline of the issue's target. The ``/bench/floor/*`` views are the floor under any upload
endpoint: each does one more of the things an upload cannot skip, with nothing of Eco²'s own
(no validation, no Scan model, no task history, no outbox, no progress mirror):

* ``parse``: read the multipart body with DRF's parser (as the upload view does);
* ``store``: + write the photo with the storage backend and INSERT one row (autocommit);
* ``publish``: + publish one message to the broker with the app's publisher confirms.

What ``POST /api/v1/scans`` costs beyond ``floor/publish`` is the product's own work.
"""

import uuid

from django.core.files.storage import default_storage
from django.db import connection
from django.urls import include, path
from kombu import Queue
from rest_framework.response import Response
from rest_framework.views import APIView

# Created and dropped by bench/api_latency.py; portable to SQLite and PostgreSQL.
FLOOR_TABLE = "bench_floor_upload"
FLOOR_TABLE_DDL = (
    f"CREATE TABLE IF NOT EXISTS {FLOOR_TABLE} "
    "(id varchar(36) PRIMARY KEY, photo varchar(255) NOT NULL, hint text NOT NULL)"
)
FLOOR_QUEUE = Queue("bench.floor", routing_key="bench.floor")


class BareAccepted(APIView):
    def post(self, request):
        return Response({"status": "queued"}, status=202)


class FloorParse(APIView):
    def post(self, request):
        photo = request.data.get("image")
        if photo is None:
            return Response({"detail": "no image part"}, status=400)
        task_id = str(uuid.uuid4())
        self.after_parse(task_id, photo, request.data.get("hint", ""))
        return Response({"task_id": task_id, "status": "queued"}, status=202)

    def after_parse(self, task_id: str, photo, hint: str) -> None:
        pass


class FloorStore(FloorParse):
    def after_parse(self, task_id: str, photo, hint: str) -> None:
        name = default_storage.save(f"bench-floor/{task_id}.jpg", photo)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {FLOOR_TABLE} (id, photo, hint) VALUES (%s, %s, %s)",
                [task_id, name, hint],
            )


class FloorPublish(FloorStore):
    def after_parse(self, task_id: str, photo, hint: str) -> None:
        from eco2.celery import app

        super().after_parse(task_id, photo, hint)
        # one JSON message through the app's producer pool: its connection has the app's
        # transport options, publisher confirms included, so this waits for the broker's ack;
        # persistent, as Celery's task messages are
        with app.producer_pool.acquire(block=True) as producer:
            producer.publish(
                {"task_id": task_id},
                exchange="",
                routing_key=FLOOR_QUEUE.routing_key,
                declare=[FLOOR_QUEUE],
                serializer="json",
                delivery_mode="persistent",
            )


urlpatterns = [
    path("bench/bare", BareAccepted.as_view()),
    path("bench/floor/parse", FloorParse.as_view()),
    path("bench/floor/store", FloorStore.as_view()),
    path("bench/floor/publish", FloorPublish.as_view()),
    path("", include("eco2.urls")),
]
