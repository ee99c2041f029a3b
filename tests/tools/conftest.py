"""moto's S3 server on loopback for the operator tools' tests.

One server per test session (moto keeps its backends in process memory, so
several servers would share state anyway), reset before each test. Every
request goes to 127.0.0.1 over real HTTP: the tools' botocore clients, their
retries and their error handling run as they would against a real service.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config
from moto.server import ThreadedMotoServer

ROOT = Path(__file__).resolve().parents[2]
REGION = "fsn1"  # Hetzner's location name; moto accepts any region name
ACCESS_KEY_ID = "TESTKEYID0123456789A"  # moto ignores it unless auth is on
SECRET_ACCESS_KEY = "test-secret-do-not-print-0123456789"
ALLOW_ALL_S3 = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
)


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_url(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A clean moto and an environment that points nowhere but at it."""
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "PULUMI_STATE_BUCKET",
        "ENDPOINT_BUCKET",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_REGION", REGION)
    return moto_url


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


@pytest.fixture
def s3(s3_url: str) -> Any:
    return s3_client(s3_url)


@dataclass
class IamKey:
    access_key_id: str
    secret_access_key: str


@pytest.fixture
def iam_auth(s3_url: str) -> Iterator[IamKey]:
    """moto with request authentication on, and one IAM key allowed s3:*.

    moto skips authentication for the first INITIAL_NO_AUTH_ACTION_COUNT
    requests (infinite by default); its server's /moto-api/reset-auth endpoint
    sets that count, here to 0, so from then on every S3 request's signature
    is checked against moto's IAM users, as S3 would.
    """
    iam = s3_client(s3_url, service="iam")
    iam.create_user(UserName="state-operator")
    iam.put_user_policy(UserName="state-operator", PolicyName="s3", PolicyDocument=ALLOW_ALL_S3)
    key = iam.create_access_key(UserName="state-operator")["AccessKey"]
    requests.post(f"{s3_url}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        yield IamKey(key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        requests.post(f"{s3_url}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(
    module: str, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """The tool as an operator runs it: `python -m tools.<module>` in a child process."""
    import os

    return subprocess.run(
        [sys.executable, "-m", f"tools.{module}", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
