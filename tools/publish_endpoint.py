"""Publish the stack's non-secret `runtimeEndpoint` document to S3.

Consumers that cannot read this project's Pulumi state (another team's CI, a
service at boot) fetch the endpoint document from a known object instead.
Input is what `pulumi stack output --json` prints (a file, or `-` for stdin);
only `runtimeEndpoint` is taken from it. The client key in `runtimeClientTls`
is never published: a PEM private key anywhere in the input is a hard error
(run `pulumi stack output --json` without --show-secrets), and so is any
secret-looking field or masked "[secret]" value in the endpoint document.

Checked here: nothing secret in the document, then the full contract
(schema, hosts, runtimes, isolation, CA certificate) by the program's own
reader, `components.endpoint.read_endpoint`: consumers get only documents
the consumer side accepts.

Idempotent: the object is written as canonical JSON (sorted keys), and only
when its bytes differ from what is stored (ETag as MD5, else the stored
bytes), so publishing the same document twice makes one version.

    pulumi stack output --json -s dev | python -m tools.publish_endpoint - \\
        --bucket acme-runtime-endpoints --key dev/runtime-endpoint.json \\
        --endpoint https://fsn1.your-objectstorage.com --region fsn1

Exit codes: 0 published or unchanged, 1 error, 2 usage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from components.endpoint import ENDPOINT_SCHEMA, EndpointError, read_endpoint
from tools.s3 import (
    ToolError,
    endpoint_from_env,
    error_code,
    explain,
    http_status,
    log,
    make_client,
    normalize_endpoint,
    object_url,
    region_from_env,
)

TOOL = "publish_endpoint"
OUTPUT_NAME = "runtimeEndpoint"
CONTENT_TYPE = "application/json"
PEM_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
# Pulumi prints a secret output as this string without --show-secrets.
SECRET_MASK = "[secret]"
# Field names that mean a secret; the endpoint document has none of them
# (its `sshHostKey` is a public host key and is allowed).
SECRET_FIELD = re.compile(
    r"(?i)(private.?key|key.?pem|client.?key|secret|password|passphrase|token|access.?key)"
)


def walk(value: Any, path: str = "$") -> Iterator[tuple[str, str | None, Any]]:
    """Yield (path, key-or-None, value) for every node of a JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"{path}.{k}", k, v
            yield from walk(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield f"{path}[{i}]", None, v
            yield from walk(v, f"{path}[{i}]")


def refuse_private_keys(document: Any) -> None:
    """A PEM private key anywhere in the input stops the run, whatever output holds it."""
    for path, _, value in walk(document):
        if isinstance(value, str) and PEM_PRIVATE_KEY.search(value):
            raise ToolError(
                f"refusing: the input holds a PEM private key at {path}; publish from "
                "`pulumi stack output --json` without --show-secrets"
            )
    if isinstance(document, str) and PEM_PRIVATE_KEY.search(document):
        raise ToolError("refusing: the input holds a PEM private key")


def extract_endpoint(outputs: Any) -> Any:
    """Only `runtimeEndpoint` from the stack outputs; never anything beside it."""
    if not isinstance(outputs, dict):
        raise ToolError("expected the JSON object `pulumi stack output --json` prints")
    if OUTPUT_NAME not in outputs:
        raise ToolError(
            f"no {OUTPUT_NAME} output in the input (outputs: {', '.join(sorted(outputs)) or 'none'})"
        )
    doc = outputs[OUTPUT_NAME]
    if isinstance(doc, str) and doc != SECRET_MASK:
        try:
            doc = json.loads(doc)  # an output exported as JSON text
        except json.JSONDecodeError:
            raise ToolError(f"{OUTPUT_NAME} is a string that is not JSON") from None
    return doc


def validate_endpoint_document(doc: Any) -> dict[str, Any]:
    """The publishable endpoint document, or ToolError saying why not."""
    if doc == SECRET_MASK:
        raise ToolError(
            f"{OUTPUT_NAME} is a secret output ([secret]); it is meant to be plain, do not publish it"
        )
    if not isinstance(doc, dict):
        raise ToolError(f"{OUTPUT_NAME}: expected an object, got {type(doc).__name__}")
    if doc.get("schema") != ENDPOINT_SCHEMA:
        raise ToolError(f"{OUTPUT_NAME}.schema: expected {ENDPOINT_SCHEMA!r}, got {doc.get('schema')!r}")
    refuse_private_keys(doc)
    for path, key, value in walk(doc, OUTPUT_NAME):
        if key is not None and SECRET_FIELD.search(key):
            raise ToolError(f"refusing: {path} looks like a secret field")
        if value == SECRET_MASK:
            raise ToolError(f"refusing: {path} is a masked secret value")
    try:
        read_endpoint(doc)
    except (EndpointError, TypeError, AttributeError) as err:
        raise ToolError(f"{OUTPUT_NAME} does not fit the endpoint contract: {err}") from None
    return doc


def canonical_bytes(doc: dict[str, Any]) -> bytes:
    """One byte form per document, so equal documents compare equal in storage."""
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def stored_bytes_match(client: Any, bucket: str, key: str, body: bytes, endpoint: str | None) -> bool:
    """Whether the object already holds exactly `body`.

    ETag is the MD5 of a single-part object without KMS or SSE-C; when it is
    not (multipart, KMS, some S3-compatible services), compare the bytes.
    """
    doing = f"reading s3://{bucket}/{key}"
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if error_code(err) in ("404", "NoSuchKey", "NotFound") or http_status(err) == 404:
            return False
        raise explain(err, endpoint, doing) from None
    except BotoCoreError as err:
        raise explain(err, endpoint, doing) from None
    if head.get("ETag", "").strip('"') == hashlib.md5(body).hexdigest():
        return True
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    except (ClientError, BotoCoreError) as err:
        raise explain(err, endpoint, doing) from None


def publish(client: Any, bucket: str, key: str, body: bytes, endpoint: str | None) -> dict[str, Any]:
    """Upload unless unchanged; returns what happened."""
    if stored_bytes_match(client, bucket, key, body, endpoint):
        log(TOOL, f"s3://{bucket}/{key} already holds this document, no change")
        return {"changed": False, "versionId": None}
    try:
        out = client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=CONTENT_TYPE)
    except (ClientError, BotoCoreError) as err:
        raise explain(err, endpoint, f"writing s3://{bucket}/{key}") from None
    log(TOOL, f"published s3://{bucket}/{key} ({len(body)} bytes)")
    return {"changed": True, "versionId": out.get("VersionId")}


def read_input(source: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()
    except OSError as err:
        raise ToolError(f"cannot read {source}: {err.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ToolError(
            f"{'stdin' if source == '-' else source} is not JSON ({err.msg} at line {err.lineno})"
        ) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.publish_endpoint",
        description="Publish runtimeEndpoint (never runtimeClientTls) from `pulumi stack output --json` to S3.",
    )
    parser.add_argument("source", help="file with `pulumi stack output --json`, or - for stdin")
    parser.add_argument(
        "--bucket", default=os.environ.get("ENDPOINT_BUCKET"), help="bucket (env ENDPOINT_BUCKET)"
    )
    parser.add_argument("--key", required=True, help="object key, e.g. dev/runtime-endpoint.json")
    parser.add_argument(
        "--endpoint",
        default=endpoint_from_env(),
        help="S3 endpoint URL (env AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL; omit for AWS S3)",
    )
    parser.add_argument(
        "--region", default=region_from_env(), help="region (env AWS_REGION or AWS_DEFAULT_REGION)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="validate and print the document; upload nothing"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    args = parser.parse_args(argv)
    missing = [flag for flag, value in (("--bucket", args.bucket), ("--region", args.region)) if not value]
    if missing and not args.dry_run:
        parser.error(f"missing {' and '.join(missing)} (flag or environment)")
    args.endpoint = normalize_endpoint(args.endpoint)
    return args


def main(argv: list[str] | None = None, client: Any = None) -> int:
    """Entry point; `client` lets tests hand in a wrapped S3 client."""
    args = parse_args(argv)
    try:
        outputs = read_input(args.source)
        refuse_private_keys(outputs)
        doc = validate_endpoint_document(extract_endpoint(outputs))
        body = canonical_bytes(doc)
        if args.dry_run:
            sys.stdout.write(body.decode())
            return 0
        client = client or make_client(args.endpoint, args.region)
        result = publish(client, args.bucket, args.key, body, args.endpoint)
    except ToolError as err:
        log(TOOL, f"error: {err}")
        if args.json:
            print(json.dumps({"ok": False, "error": str(err)}))
        return err.exit_code
    url = object_url(args.bucket, args.key, args.endpoint, args.region)
    if args.json:
        summary = {"ok": True, "bucket": args.bucket, "key": args.key, "url": url, **result}
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
