"""The one place that builds an S3 client (and the matching options for delta-rs).

Everything that talks to object storage (MinIO locally, any S3-compatible store in production)
goes through :func:`s3_client`, so endpoint, keys, region and addressing style come from
``settings.s3`` alone. Path-style addressing (``http://host:port/bucket/key``) is used because
MinIO and most self-hosted stores do not serve virtual-hosted bucket names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lambdarec.settings import Settings

if TYPE_CHECKING:  # boto3-stubs are optional
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any


def s3_client(settings: Settings, timeout: float | None = None, retries: int = 3) -> S3Client:
    """A boto3 S3 client for ``settings.s3``.

    ``timeout`` (seconds) bounds connect and read; health probes pass a small one with
    ``retries=0`` so that a dead endpoint answers "no" quickly instead of retrying for a minute.
    """
    import boto3
    from botocore.config import Config

    s3 = settings.s3
    config = Config(
        s3={"addressing_style": "path"},
        signature_version="s3v4",
        retries={"max_attempts": retries + 1, "mode": "standard"},
        **({"connect_timeout": timeout, "read_timeout": timeout} if timeout is not None else {}),
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=s3.endpoint_url,
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name=s3.region,
        config=config,
    )


def delta_storage_options(settings: Settings) -> dict[str, str]:
    """``storage_options`` for the ``deltalake`` package (delta-rs) pointing at ``settings.s3``."""
    s3 = settings.s3
    return {
        "AWS_ENDPOINT_URL": s3.endpoint_url,
        "AWS_ACCESS_KEY_ID": s3.access_key,
        "AWS_SECRET_ACCESS_KEY": s3.secret_key,
        "AWS_REGION": s3.region,
        "AWS_ALLOW_HTTP": "true" if s3.endpoint_url.startswith("http://") else "false",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false",
    }
