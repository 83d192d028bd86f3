"""Object storage (S3, MinIO) for the parts that are not Iceberg tables: landing files and the quarantine.

Iceberg data and metadata go through pyiceberg's FileIO and DuckDB's httpfs; this module covers
listing with ETags (the landing sensor's fingerprints), copies and small writes. Credentials come
from settings (the environment) and are handed to boto3 only, never printed.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterator

from ratatouille_assets.settings import Settings, get_settings

SCHEME = "s3://"


def is_s3(uri: str) -> bool:
    return uri.startswith(SCHEME)


def split(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len(SCHEME):].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket: use s3://<bucket>/<prefix>")
    return bucket, key


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts if p)])


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    uri: str
    key: str
    etag: str
    last_modified: str  # ISO 8601
    size: int


def client(settings: Settings | None = None):
    """A boto3 S3 client for the configured endpoint (one per settings, reused)."""
    settings = settings or get_settings()
    return _client(
        settings.s3_endpoint, settings.s3_region, settings.s3_access_key_id.reveal(),
        settings.s3_secret_access_key.reveal(),
    )


@functools.lru_cache(maxsize=8)
def _client(endpoint: str | None, region: str | None, key_id: str, secret: str):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint or None,
        region_name=region or "us-east-1",
        aws_access_key_id=key_id or None,
        aws_secret_access_key=secret or None,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}),
    )


def list_objects(s3, uri_prefix: str) -> Iterator[ObjectInfo]:
    """Every object whose key starts with the prefix of ``uri_prefix``, page by page (1,000 keys each)."""
    bucket, prefix = split(uri_prefix)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            yield ObjectInfo(
                uri=f"{SCHEME}{bucket}/{obj['Key']}",
                key=obj["Key"],
                etag=obj["ETag"].strip('"'),
                last_modified=obj["LastModified"].isoformat(),
                size=obj["Size"],
            )


def put_bytes(s3, uri: str, data: bytes, content_type: str = "application/octet-stream") -> None:
    """One PUT: the object appears whole or not at all."""
    bucket, key = split(uri)
    s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)


def copy(s3, src: str, dst: str) -> None:
    """Copy a file between S3 and S3, a local path and S3, or S3 and a local path."""
    if is_s3(src) and is_s3(dst):
        src_bucket, src_key = split(src)
        dst_bucket, dst_key = split(dst)
        s3.copy({"Bucket": src_bucket, "Key": src_key}, dst_bucket, dst_key)
    elif is_s3(dst):
        s3.upload_file(src, *split(dst))
    elif is_s3(src):
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        s3.download_file(*split(src), dst)
    else:
        raise ValueError("copy() is for S3; local-to-local copies belong to the caller")


def delete(s3, uris: list[str]) -> None:
    """Delete objects, 1,000 per request."""
    by_bucket: dict[str, list[str]] = {}
    for uri in uris:
        bucket, key = split(uri)
        by_bucket.setdefault(bucket, []).append(key)
    for bucket, keys in by_bucket.items():
        for i in range(0, len(keys), 1000):
            s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})


def ensure_bucket(s3, uri: str) -> bool:
    """Create the bucket of ``uri`` if it does not exist; True if it was created."""
    bucket, _ = split(uri)
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise
    s3.create_bucket(Bucket=bucket)
    return True
