"""What the tests of the /api/v1 endpoints share: the scan URLs, an uploaded file, a client
logged in as someone, and reading a scan's event stream (SSE) through the ASGI request path."""

from __future__ import annotations

import json

from asgiref.sync import async_to_sync
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import AsyncClient
from rest_framework.test import APIClient

SCANS_URL = "/api/v1/scans"
BATCH_URL = "/api/v1/scans/batch"
EN = {"HTTP_ACCEPT_LANGUAGE": "en"}


def upload(name: str, content: bytes, content_type: str = "image/jpeg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type=content_type)


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def parse_events(stream: str) -> list[dict]:
    parsed = []
    for block in stream.split("\n\n"):
        fields: dict = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            if key in ("event", "id", "data"):
                fields[key] = value
        if "event" in fields:
            fields["data"] = json.loads(fields.get("data", "null"))
            parsed.append(fields)
    return parsed


def stream_events(client: AsyncClient, url: str, on_chunk=None, **headers):
    """Read a whole stream through the ASGI request path; ``on_chunk`` may change the scan."""

    async def run():
        response = await client.get(url, headers=headers)
        if not response.streaming:
            return response, ""
        chunks = []
        async for chunk in response.streaming_content:
            chunks.append(chunk.decode())
            if on_chunk:
                await on_chunk(chunk.decode())
        return response, "".join(chunks)

    return async_to_sync(run)()


def async_client(user=None, **defaults) -> AsyncClient:
    client = AsyncClient(**defaults)
    if user is not None:
        client.force_login(user)
    return client
