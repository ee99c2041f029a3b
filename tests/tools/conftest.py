"""moto's S3 server on loopback for the operator tools' tests.

One server per test session (moto keeps its backends in process memory, so
several servers would share state anyway), reset before each test. Every
request goes to 127.0.0.1 over real HTTP: the tools' botocore clients, their
retries and their error handling run as they would against a real service.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from moto.server import ThreadedMotoServer

from tests.tools.helpers import ACCESS_KEY_ID, ALLOW_ALL_S3, REGION, SECRET_ACCESS_KEY, IamKey, s3_client


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


@pytest.fixture
def s3(s3_url: str) -> Any:
    return s3_client(s3_url)


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
