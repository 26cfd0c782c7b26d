"""An S3-compatible server on loopback for the object-storage tests (moto in server mode, in a
thread of the test process): the real S3 code path of django-storages and boto3, over HTTP,
for this process and for the worker and web subprocesses alike. One private bucket per run."""

from __future__ import annotations

import contextlib
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eco2.settings.media import s3_media_storage

BUCKET = "eco2-photos-test"
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
EXPIRE_SECONDS = 120


class S3Server:
    """moto's S3 on 127.0.0.1 with one bucket, created private (no ACL, no policy)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)

    def __enter__(self) -> S3Server:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        self.client().create_bucket(Bucket=BUCKET)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop()

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def env(self) -> dict[str, str]:
        """The environment that points a web or worker subprocess at the bucket."""
        return {
            "MEDIA_STORAGE": "s3",
            "AWS_STORAGE_BUCKET_NAME": BUCKET,
            "AWS_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_S3_REGION_NAME": REGION,
            "AWS_QUERYSTRING_EXPIRE": str(EXPIRE_SECONDS),
            **CREDENTIALS,
        }

    def storage_setting(self) -> dict[str, Any]:
        """STORAGES["default"] for this process, as the settings build it from ``env()``."""
        return s3_media_storage(
            bucket_name=BUCKET,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            expire_seconds=EXPIRE_SECONDS,
        )

    def keys(self, prefix: str = "") -> set[str]:
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        )
        return {item["Key"] for page in pages for item in page.get("Contents", [])}

    def object_bytes(self, key: str) -> bytes:
        return self.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def unsigned_get(self, key: str) -> int:
        """The status of a plain GET of the object's address, with no signature."""
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/{BUCKET}/{key}", timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code


@contextlib.contextmanager
def serve_photo(content: bytes) -> Iterator[str]:
    """A web server on loopback answering every GET with ``content`` as a JPEG; yields the
    photo's URL (image_url scans need SCAN_FETCH_ALLOW_LOOPBACK to reach it)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/photo.jpg"
    finally:
        server.shutdown()
        server.server_close()
