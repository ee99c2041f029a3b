"""Constants and helpers for the operator tools' tests (fixtures are in conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]
REGION = "fsn1"  # Hetzner's location name; moto accepts any region name
ACCESS_KEY_ID = "TESTKEYID0123456789A"  # moto ignores it unless auth is on
SECRET_ACCESS_KEY = "test-secret-do-not-print-0123456789"
ALLOW_ALL_S3 = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
)


@dataclass
class IamKey:
    access_key_id: str
    secret_access_key: str


def s3_client(
    url: str, key: str = ACCESS_KEY_ID, secret: str = SECRET_ACCESS_KEY, service: str = "s3"
) -> Any:
    """A plain boto3 client for arranging and inspecting, independent of the tools' own."""
    return boto3.client(
        service,
        endpoint_url=url,
        region_name=REGION if service == "s3" else "us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required"),
    )


def run_cli(
    module: str, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """The tool as an operator runs it: `python -m tools.<module>` in a child process."""
    return subprocess.run(
        [sys.executable, "-m", f"tools.{module}", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
