"""The single-writer lock on object storage (s3://), which a local `flock` cannot be: a lock object
created with a conditional write (`If-None-Match: *`), which S3 and S3-compatible servers grant to
exactly one of several writers, on any machine. It names its holder; it is removed when the holder
finishes, even on an error. A holder killed outright leaves it behind: it says since when and by
whom, and `chatbot unlock` removes it once that process is known to be gone.

Credentials and the endpoint come from the config's storage options, else from the usual AWS
variables (AWS_ACCESS_KEY_ID, AWS_ENDPOINT, AWS_REGION, ...), as LanceDB reads them; never logged.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from typing import Iterator, Mapping
from urllib.parse import urlsplit

from chatbot.errors import StoreBusy, StoreError


def _client(options: Mapping[str, str] | None = None):
    """A boto3 client for the same store LanceDB opens: the config's storage options, else the AWS variables."""
    try:
        import boto3
    except ImportError:
        raise StoreError("a knowledge base on s3:// needs boto3 for its write lock: pip install boto3") from None
    options = options or {}
    endpoint = (options.get("aws_endpoint") or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT")
                or None)
    region = (options.get("aws_region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
              or "us-east-1")
    keys = {name: options[name] for name in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
            if options.get(name)}
    return boto3.client("s3", endpoint_url=endpoint, region_name=region, **keys)


def lock_location(uri: str, table: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/.{table}.write.lock" if prefix else f".{table}.write.lock"


@contextmanager
def s3_write_lock(uri: str, table: str, client=None, options: Mapping[str, str] | None = None) -> Iterator[None]:
    from botocore.exceptions import ClientError

    client = client or _client(options)
    bucket, key = lock_location(uri, table)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        client.put_object(Bucket=bucket, Key=key, Body=json.dumps(holder).encode(), IfNoneMatch="*")
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
            raise StoreBusy(f"another ingest ({_holder(client, bucket, key)}) is writing to the knowledge base "
                            f"'{table}' at '{uri}'; wait for it to finish, or, if that process is gone, run "
                            "`chatbot unlock`") from None
        raise StoreError(f"cannot take the write lock s3://{bucket}/{key}: {code or e}") from None
    try:
        yield
    finally:
        client.delete_object(Bucket=bucket, Key=key)


def _holder(client, bucket: str, key: str) -> str:
    try:
        held = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        return f"pid {held['pid']} on {held['host']}, since {held['since']}"
    except Exception:
        return "another process"


def s3_unlock(uri: str, table: str, client=None, options: Mapping[str, str] | None = None) -> bool:
    """Remove a lock left by a writer that died; False when there was none."""
    from botocore.exceptions import ClientError

    client = client or _client(options)
    bucket, key = lock_location(uri, table)
    try:
        client.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    client.delete_object(Bucket=bucket, Key=key)
    return True
