"""The S3 client and the error wording both operator tools share.

Why one module: both tools talk to an S3-compatible service (Hetzner Object
Storage, MinIO, Ceph, AWS) and must turn its failures into one line an
operator can act on, naming the endpoint or at most the first characters of
the access key id, never a secret.
"""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)
from botocore.exceptions import (
    ConnectTimeoutError as BotoConnectTimeout,
)
from botocore.exceptions import (
    ReadTimeoutError as BotoReadTimeout,
)

# Connection limits: an operator waiting on a wrong endpoint should hear so in
# seconds, not after botocore's default 60 s x 5 attempts.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
MAX_ATTEMPTS = 2

# Codes by which S3 services say "who you are is wrong". A request refused for
# these must fail the run: carrying on would report a bucket it never saw.
CREDENTIAL_ERROR_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "InvalidSecurity",
        "AuthorizationHeaderMalformed",
    }
)
# "What you asked is not allowed for you": also fatal, worded differently.
PERMISSION_ERROR_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem"})
# Codes (and HTTP statuses) by which S3-compatible services say "this API
# does not exist here": reported as unsupported, never fatal.
UNSUPPORTED_ERROR_CODES = frozenset(
    {"NotImplemented", "NotImplementedError", "XNotImplemented", "UnsupportedOperation", "MethodNotAllowed"}
)
UNSUPPORTED_HTTP_STATUSES = frozenset({405, 501})


class ToolError(Exception):
    """A failure with a one-line, operator-facing message and an exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def log(tool: str, message: str) -> None:
    """Human log line on stderr; stdout is kept for the machine-readable result."""
    print(f"{tool}: {message}", file=sys.stderr, flush=True)


def normalize_endpoint(endpoint: str | None) -> str | None:
    """An endpoint URL with a scheme; a bare host means HTTPS."""
    if not endpoint:
        return None
    endpoint = endpoint.strip().rstrip("/")
    return endpoint if "://" in endpoint else f"https://{endpoint}"


def endpoint_from_env() -> str | None:
    """The AWS SDKs' own variables for a custom S3 endpoint, most specific first."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def region_from_env() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def make_client(endpoint: str | None, region: str) -> Any:
    """An S3 client for AWS or an S3-compatible service.

    Path-style addressing because S3-compatible services do not all serve
    virtual-host buckets. Checksums only when an operation requires them:
    botocore 1.36 started sending CRC32 trailers by default, which several
    S3-compatible services reject.
    """
    config = Config(
        region_name=region,
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


def key_hint() -> str:
    """The first four characters of AWS_ACCESS_KEY_ID, or nothing.

    Enough for an operator to tell which key was used; never the secret, and
    nothing at all for a value too short to be a real key id.
    """
    access_key = os.environ.get("AWS_ACCESS_KEY_ID", "")
    return f" (access key id {access_key[:4]}...)" if len(access_key) >= 12 else ""


def error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code") or "")


def http_status(err: ClientError) -> int:
    return int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def is_unsupported(err: ClientError) -> bool:
    """The service does not implement this API (not: we may not use it)."""
    return error_code(err) in UNSUPPORTED_ERROR_CODES or http_status(err) in UNSUPPORTED_HTTP_STATUSES


def explain(err: Exception, endpoint: str | None, doing: str) -> ToolError:
    """Turn a botocore failure into one line that says what to check."""
    where = endpoint or "the AWS S3 endpoint"
    if isinstance(err, (NoCredentialsError, PartialCredentialsError)):
        return ToolError(
            f"{doing}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(the object storage key pair)"
        )
    if isinstance(err, SSLError):
        return ToolError(
            f"{doing}: TLS to {where} failed: check the endpoint's scheme and host name "
            "(https://<location>.your-objectstorage.com for Hetzner)"
        )
    if isinstance(err, (EndpointConnectionError, BotoConnectTimeout, ConnectionClosedError)):
        return ToolError(
            f"{doing}: cannot reach the S3 endpoint {where}: check the URL (scheme, host, port), "
            "DNS, and that this machine may connect to it"
        )
    if isinstance(err, BotoReadTimeout):
        return ToolError(f"{doing}: the S3 endpoint {where} accepted the connection but did not answer")
    if isinstance(err, ClientError):
        code, message = error_code(err), err.response.get("Error", {}).get("Message", "")
        hint = key_hint()
        if code in CREDENTIAL_ERROR_CODES or (code == "" and http_status(err) == 401):
            return ToolError(
                f"{doing}: {where} refused the credentials{hint}: {code or 'unauthorized'}; check "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY and the region"
            )
        if code in PERMISSION_ERROR_CODES or (code in ("", "403") and http_status(err) == 403):
            return ToolError(
                f"{doing}: access denied by {where}{hint}: the key lacks this permission, or the bucket "
                "belongs to another account"
            )
        return ToolError(f"{doing}: {where} answered {code or http_status(err)}: {message}".rstrip(": "))
    if isinstance(err, BotoCoreError):
        return ToolError(f"{doing}: {err}")
    return ToolError(f"{doing}: {err}")


def pulumi_login_url(bucket: str, endpoint: str | None, region: str) -> str:
    """The DIY-backend URL `pulumi login` takes for this bucket.

    Query parameters as Pulumi documents them for S3-compatible servers
    (`endpoint` is host[:port] only, `disableSSL` for plain HTTP,
    `s3ForcePathStyle`) plus `region`.
    """
    if not endpoint:
        return f"s3://{bucket}?region={region}"
    parts = urlsplit(endpoint)
    query = f"endpoint={parts.netloc}&region={region}"
    if parts.scheme == "http":
        query += "&disableSSL=true"
    return f"s3://{bucket}?{query}&s3ForcePathStyle=true"


def object_url(bucket: str, key: str, endpoint: str | None, region: str) -> str:
    """The path-style HTTPS URL of an object (what `make_client` addresses)."""
    base = endpoint or f"https://s3.{region}.amazonaws.com"
    return f"{base}/{bucket}/{quote(key)}"
