"""Where photos and thumbnails are stored: the local file system (MEDIA_ROOT) by default, or a
private S3-compatible bucket (AWS S3, MinIO, Ceph, Cloudflare R2) through django-storages, so
that web and workers on several hosts share no disk (docs/deployment.md, "Several hosts")."""

from __future__ import annotations

from typing import Any


def s3_media_storage(
    *,
    bucket_name: str,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    addressing_style: str | None = None,
    location: str = "",
    expire_seconds: int = 300,
) -> dict[str, Any]:
    """STORAGES["default"] for a private bucket. The credentials are boto3's: AWS_ACCESS_KEY_ID
    and AWS_SECRET_ACCESS_KEY from the environment, or an instance or pod role."""
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket_name,
            "endpoint_url": endpoint_url or None,
            "region_name": region_name or None,
            "addressing_style": addressing_style or None,
            "location": location,  # a prefix inside the bucket ("" = its root)
            "signature_version": "s3v4",  # what every S3-compatible service accepts
            # objects get no ACL of their own: they stay as private as the bucket, never
            # public-read; the owner's photo view redirects to a URL signed for this long
            "default_acl": None,
            "querystring_auth": True,
            "querystring_expire": expire_seconds,
            "custom_domain": None,  # a custom domain would give unsigned, public URLs
            # the stored names are the scan's id: a redelivered step rewrites the same object
            "file_overwrite": True,
        },
    }
