"""tools.publish_endpoint against moto's S3 server on 127.0.0.1.

Proves: only `runtimeEndpoint` is uploaded, as application/json, in one
canonical byte form; publishing the same document twice (or with its keys in
another order) leaves one object version; a changed document adds one; a PEM
private key anywhere in the input, a secret-looking field, a masked secret or
a wrong schema stops the run before anything is written; a document built by
the program's own components.endpoint.build_endpoint is publishable; every
document the consumer's reader refuses (one row per rule of
components.endpoint.read_endpoint, tests/support/endpoint_rules.py) is
refused by the tool.

Does not prove: behaviour on a real service (ETags there may not be MD5s; the
tool then compares the stored bytes, which the stubbed-ETag test exercises).
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from components import endpoint as contract
from tests.support.endpoint_rules import CA_PEM, RULES
from tests.tools.helpers import REGION, run_cli
from tools import publish_endpoint
from tools.s3 import ToolError

BUCKET = "acme-runtime-endpoints"
KEY = "dev/runtime-endpoint.json"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAtest\n-----END PRIVATE KEY-----\n"


def endpoint_doc(cold_start_ms: int = 180) -> dict[str, Any]:
    """A runtimeEndpoint as the program builds it (components.endpoint)."""
    host = {
        "name": "gv-1",
        "source": "hcloud",
        "dockerHost": "tcp://10.20.1.5:2376",
        "privateAddress": "10.20.1.5",
        "publicAddress": "198.51.100.5",
        "sshHostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE7x5gVvJ0p9t1y1Gq3k2m0Yb9QvGk0Fh0xw9m3Lr2aB",
        "defaultRuntime": "runsc",
        "runtimes": [
            {
                "name": "runsc",
                "shim": None,
                "isolation": "sandbox",
                "hypervisor": None,
                "guestKernel": "4.4.0",
                "coldStartMs": cold_start_ms,
            }
        ],
        "versions": {"docker": "26.1.5", "runsc": "20240729"},
        "hostKernel": "6.12.38+deb13-amd64",
    }
    return contract.build_endpoint(CA_PEM, "sandbox", [host])


def stack_outputs(endpoint: Any = None, client_tls: Any = "[secret]") -> dict[str, Any]:
    """What `pulumi stack output --json` prints (secrets masked unless --show-secrets)."""
    return {
        "runtimeEndpoint": endpoint_doc() if endpoint is None else endpoint,
        "runtimeClientTls": client_tls,
    }


def write(tmp_path: Any, outputs: dict[str, Any]) -> str:
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    return str(path)


def publish(url: str, source: str, *extra: str, client: Any = None) -> int:
    argv = [source, "--bucket", BUCKET, "--key", KEY, "--endpoint", url, "--region", REGION, *extra]
    return publish_endpoint.main(argv, client=client)


@pytest.fixture
def bucket(s3_url: str, s3: Any) -> Any:
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return s3


def versions(s3: Any) -> list[dict[str, Any]]:
    return s3.list_object_versions(Bucket=BUCKET, Prefix=KEY).get("Versions", [])


def test_publish_twice_makes_one_version(s3_url, bucket, tmp_path, capsys):
    source = write(tmp_path, stack_outputs())
    assert publish(s3_url, source) == 0
    out, err = capsys.readouterr()
    assert out == f"{s3_url}/{BUCKET}/{KEY}\n"
    assert "published" in err

    assert publish(s3_url, source) == 0
    out, err = capsys.readouterr()
    assert out == f"{s3_url}/{BUCKET}/{KEY}\n"
    assert "no change" in err
    assert len(versions(bucket)) == 1

    obj = bucket.get_object(Bucket=BUCKET, Key=KEY)
    assert obj["ContentType"] == "application/json"
    body = obj["Body"].read()
    stored = json.loads(body)
    assert stored == endpoint_doc()
    assert "runtimeClientTls" not in json.dumps(stored)
    # Stored in the one canonical form (sorted keys, two-space indent, final
    # newline) that the next publish compares bytes against.
    assert body == (json.dumps(endpoint_doc(), indent=2, sort_keys=True) + "\n").encode()


def test_the_same_document_with_keys_in_another_order_is_unchanged(s3_url, bucket, tmp_path, capsys):
    assert publish(s3_url, write(tmp_path, stack_outputs())) == 0
    reordered = json.loads(json.dumps(endpoint_doc()), object_pairs_hook=lambda pairs: dict(reversed(pairs)))
    assert list(reordered) != list(endpoint_doc())
    assert publish(s3_url, write(tmp_path, stack_outputs(reordered))) == 0
    assert "no change" in capsys.readouterr().err
    assert len(versions(bucket)) == 1


def test_changed_document_adds_one_version(s3_url, bucket, tmp_path, capsys):
    assert publish(s3_url, write(tmp_path, stack_outputs())) == 0
    assert publish(s3_url, write(tmp_path, stack_outputs(endpoint_doc(cold_start_ms=175)))) == 0
    assert len(versions(bucket)) == 2


def test_reads_stdin_and_reports_json(s3_url, bucket, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(stack_outputs())))
    assert publish(s3_url, "-", "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is True and summary["changed"] is True
    assert summary["url"] == f"{s3_url}/{BUCKET}/{KEY}"
    assert summary["versionId"]


def test_same_content_with_a_non_md5_etag_is_still_unchanged(s3_url, bucket, tmp_path, capsys):
    """Services with KMS or multipart ETags: the tool falls back to comparing bytes."""
    source = write(tmp_path, stack_outputs())
    assert publish(s3_url, source) == 0

    class OddEtag:
        def __init__(self, client: Any) -> None:
            self._client = client

        def head_object(self, **kw: Any) -> dict[str, Any]:
            return {**self._client.head_object(**kw), "ETag": '"0123456789abcdef-2"'}

        def __getattr__(self, name: str) -> Any:
            return getattr(self._client, name)

    assert publish(s3_url, source, client=OddEtag(bucket)) == 0
    assert "no change" in capsys.readouterr().err
    assert len(versions(bucket)) == 1


# ---------------------------------------------------------------- refusals


def assert_refused(s3_url: str, bucket: Any, source: str, capsys: Any, *needles: str) -> None:
    assert publish(s3_url, source) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert versions(bucket) == [], "nothing may be written"
    assert "PRIVATE KEY-----\nMIG" not in err, "the key itself is never echoed"


def test_refuses_input_with_the_client_key(s3_url, bucket, tmp_path, capsys):
    """`pulumi stack output --json --show-secrets` output holds the client key: refused whole."""
    tls = {
        "schema": "functions-runtime/client-tls@1",
        "caCertPem": CA_PEM,
        "certPem": CA_PEM,
        "keyPem": KEY_PEM,
    }
    source = write(tmp_path, stack_outputs(client_tls=tls))
    assert_refused(
        s3_url, bucket, source, capsys, "PEM private key at $.runtimeClientTls.keyPem", "--show-secrets"
    )


def test_refuses_a_private_key_inside_the_endpoint(s3_url, bucket, tmp_path, capsys):
    doc = endpoint_doc()
    doc["hosts"][0]["versions"]["note"] = "x" + KEY_PEM.replace("PRIVATE KEY", "EC PRIVATE KEY")
    assert_refused(s3_url, bucket, write(tmp_path, stack_outputs(doc)), capsys, "PEM private key")


@pytest.mark.parametrize("field", ["clientKeyPem", "privateKey", "apiToken", "password"])
def test_refuses_secret_looking_fields(s3_url, bucket, tmp_path, capsys, field):
    doc = endpoint_doc()
    doc["hosts"][0][field] = "abc"
    assert_refused(s3_url, bucket, write(tmp_path, stack_outputs(doc)), capsys, "looks like a secret field")


def test_refuses_masked_values(s3_url, bucket, tmp_path, capsys):
    assert_refused(s3_url, bucket, write(tmp_path, stack_outputs("[secret]")), capsys, "is a secret output")
    doc = endpoint_doc()
    doc["caCertPem"] = "[secret]"
    assert_refused(s3_url, bucket, write(tmp_path, stack_outputs(doc)), capsys, "masked secret value")


@pytest.mark.parametrize(
    ("outputs", "needle"),
    [
        (
            {"runtimeEndpoint": {"schema": "functions-runtime/endpoint@2"}},
            "expected 'functions-runtime/endpoint@1'",
        ),
        ({"runtimeEndpoint": {"schema": "functions-runtime/client-tls@1"}}, "schema: expected"),
        ({"somethingElse": 1}, "no runtimeEndpoint output"),
        ({"runtimeEndpoint": [1, 2]}, "expected an object"),
    ],
)
def test_refuses_documents_off_contract(s3_url, bucket, tmp_path, capsys, outputs, needle):
    assert_refused(s3_url, bucket, write(tmp_path, outputs), capsys, needle)


def test_refuses_a_document_the_consumer_reader_would_reject(s3_url, bucket, tmp_path, capsys):
    doc = endpoint_doc()
    doc["hosts"] = []
    assert_refused(s3_url, bucket, write(tmp_path, stack_outputs(doc)), capsys, "does not fit the endpoint contract")


def test_endpoint_exported_as_json_text_is_accepted(s3_url, bucket, tmp_path):
    assert publish(s3_url, write(tmp_path, stack_outputs(json.dumps(endpoint_doc())))) == 0
    assert json.loads(bucket.get_object(Bucket=BUCKET, Key=KEY)["Body"].read()) == endpoint_doc()


def test_validation_passes_a_program_built_document_through_unchanged():
    doc = endpoint_doc()
    assert publish_endpoint.validate_endpoint_document(doc) == endpoint_doc()


@pytest.mark.parametrize("rule", RULES, ids=[rule.id for rule in RULES])
def test_the_tool_refuses_every_document_the_reader_refuses(rule):
    """One row per rule of components.endpoint's reader (tests/support/endpoint_rules.py)."""
    with pytest.raises(ToolError):
        publish_endpoint.validate_endpoint_document(rule.broken())


def test_dry_run_prints_the_document_and_uploads_nothing(tmp_path, capsys):
    assert publish_endpoint.main([write(tmp_path, stack_outputs()), "--key", KEY, "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out) == endpoint_doc()


def test_cli_errors_are_one_line(s3_url, closed_port, tmp_path):
    source = write(tmp_path, stack_outputs())
    endpoint = f"http://127.0.0.1:{closed_port}"
    proc = run_cli("publish_endpoint", source, "--bucket", BUCKET, "--key", KEY, "--endpoint", endpoint)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"publish_endpoint: error: reading s3://{BUCKET}/{KEY}: cannot reach the S3 endpoint {endpoint}: "
        "check the URL (scheme, host, port), DNS, and that this machine may connect to it"
    ]
    proc = run_cli("publish_endpoint", str(tmp_path / "missing.json"), "--bucket", BUCKET, "--key", KEY)
    assert proc.returncode == 1 and "cannot read" in proc.stderr and "Traceback" not in proc.stderr
