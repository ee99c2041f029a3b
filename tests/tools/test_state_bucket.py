"""tools.state_bucket against moto's S3 server on 127.0.0.1.

Proves, over real HTTP with botocore: the bucket is created versioned,
public-access-blocked, AES256-encrypted and with the noncurrent-expiry rule;
a second run changes nothing and says so; an existing unversioned or public
bucket is refused without --adopt-existing and fixed with it; an overwritten
state file comes back from its previous version; an unreachable endpoint and
rejected credentials (moto with IAM authentication on) end in one line and a
non-zero exit, naming no secret.

Does not prove: how Hetzner Object Storage (or any real service) answers.
moto implements every API used here, so the "unsupported API" path is
exercised with a client wrapper that raises the NotImplemented error such
services return; that proves the tool's handling of that reply, not which
APIs a given service lacks. moto does not enforce lifecycle rules or
encryption at rest either: the tests read the configuration back, nothing more.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.tools.helpers import REGION, SECRET_ACCESS_KEY, run_cli, s3_client
from tools import state_bucket
from tools.s3 import pulumi_login_url

BUCKET = "acme-pulumi-state"
STATE_KEY = ".pulumi/stacks/functions-runtime/dev.json"


def run(url: str, *extra: str, client: Any = None) -> int:
    return state_bucket.main(
        ["--bucket", BUCKET, "--endpoint", url, "--region", REGION, *extra], client=client
    )


def run_json(
    url: str, capsys: pytest.CaptureFixture[str], *extra: str, client: Any = None
) -> tuple[int, dict]:
    capsys.readouterr()  # drop what earlier runs printed
    code = run(url, "--json", *extra, client=client)
    return code, json.loads(capsys.readouterr().out)


def assert_hardened(s3: Any, days: int = state_bucket.DEFAULT_NONCURRENT_DAYS) -> None:
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert block == state_bucket.BLOCK_ALL
    rules = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert rule["ID"] == state_bucket.LIFECYCLE_RULE_ID
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] == days
    assert "Expiration" not in rule, "current state must never expire"


# ---------------------------------------------------------------- idempotence


def test_first_run_creates_and_hardens_second_run_changes_nothing(s3_url, s3, capsys):
    code, first = run_json(s3_url, capsys)
    assert code == 0
    assert first["created"] is True and first["changed"] is True
    assert first["unsupported"] == []
    assert_hardened(s3)

    code, second = run_json(s3_url, capsys)
    assert code == 0
    assert second["created"] is False
    assert second["changed"] is False and second["changes"] == []
    assert second["settings"] == first["settings"]

    code = run(s3_url)
    assert code == 0
    assert "no changes" in capsys.readouterr().err


def test_check_changes_nothing_and_reports_drift(s3_url, s3, capsys):
    assert run(s3_url, "--check") == state_bucket.EXIT_DRIFT
    with pytest.raises(ClientError):
        s3.head_bucket(Bucket=BUCKET)
    assert run(s3_url) == 0
    assert run(s3_url, "--check") == 0


def test_changed_retention_rewrites_only_the_rule(s3_url, s3, capsys):
    assert run(s3_url) == 0
    code, out = run_json(s3_url, capsys, "--noncurrent-days", "30")
    assert code == 0
    assert out["changes"] == ["noncurrent versions expire after 30 days"]
    assert_hardened(s3, days=30)


def test_other_lifecycle_rules_are_kept(s3_url, s3):
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    other = {"ID": "tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}, "Expiration": {"Days": 1}}
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [other]})
    assert run(s3_url) == 0
    ids = {r["ID"] for r in s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]}
    assert ids == {"tmp", state_bucket.LIFECYCLE_RULE_ID}


# ---------------------------------------------------------------- login line


def test_prints_the_pulumi_login_line(s3_url, capsys):
    assert run(s3_url) == 0
    out, err = capsys.readouterr()
    host = s3_url.removeprefix("http://")
    assert (
        out
        == f"pulumi login 's3://{BUCKET}?endpoint={host}&region={REGION}&disableSSL=true&s3ForcePathStyle=true'\n"
    )
    assert "--secrets-provider=passphrase" in err and "never commit" in err
    assert SECRET_ACCESS_KEY not in out + err


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (
            "https://fsn1.your-objectstorage.com",
            "s3://b?endpoint=fsn1.your-objectstorage.com&region=fsn1&s3ForcePathStyle=true",
        ),
        (
            "http://127.0.0.1:9000",
            "s3://b?endpoint=127.0.0.1:9000&region=fsn1&disableSSL=true&s3ForcePathStyle=true",
        ),
        (None, "s3://b?region=fsn1"),
    ],
)
def test_login_url(endpoint, expected):
    assert pulumi_login_url("b", endpoint, "fsn1") == expected


# ---------------------------------------------------------------- existing buckets


def make_existing(s3: Any, versioning: str | None = None, acl: str | None = None) -> None:
    kwargs: dict[str, Any] = {"ACL": acl} if acl else {}
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}, **kwargs)
    if versioning:
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": versioning})


@pytest.mark.parametrize(
    ("versioning", "acl", "reason"),
    [
        (None, None, "versioning is never enabled"),
        ("Suspended", None, "versioning is suspended"),
        ("Enabled", "public-read", "ACL grants READ to AllUsers"),
        ("Enabled", "authenticated-read", "ACL grants READ to AuthenticatedUsers"),
    ],
)
def test_unsafe_existing_bucket_is_refused_without_the_flag(s3_url, s3, capsys, versioning, acl, reason):
    make_existing(s3, versioning, acl)
    assert run(s3_url) == state_bucket.EXIT_REFUSED
    err = capsys.readouterr().err
    assert "refusing to modify existing bucket" in err and reason in err and "--adopt-existing" in err
    # Nothing was touched.
    assert s3.get_bucket_versioning(Bucket=BUCKET).get("Status") == versioning
    with pytest.raises(ClientError, match="NoSuchPublicAccessBlockConfiguration"):
        s3.get_public_access_block(Bucket=BUCKET)

    assert run(s3_url, "--adopt-existing") == 0
    assert_hardened(s3)
    grants = s3.get_bucket_acl(Bucket=BUCKET)["Grants"]
    assert not [g for g in grants if "URI" in g["Grantee"]], grants
    assert run(s3_url) == 0, "once adopted, the bucket is safe and needs no flag"


def test_existing_safe_bucket_is_hardened_without_the_flag(s3_url, s3):
    make_existing(s3, versioning="Enabled")
    assert run(s3_url) == 0
    assert_hardened(s3)


def test_public_policy_is_refused_and_never_edited(s3_url, s3, capsys):
    make_existing(s3, versioning="Enabled")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{BUCKET}/*",
            }
        ],
    }
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
    assert run(s3_url) == state_bucket.EXIT_REFUSED
    assert "bucket policy is public" in capsys.readouterr().err
    assert run(s3_url, "--adopt-existing") == 1
    assert "remove the public statements" in capsys.readouterr().err
    assert json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"]) == policy


def test_policy_reader_without_policy_status_api():
    assert state_bucket.statement_is_public({"Effect": "Allow", "Principal": "*"})
    assert state_bucket.statement_is_public({"Effect": "Allow", "Principal": {"AWS": ["arn:x", "*"]}})
    assert not state_bucket.statement_is_public({"Effect": "Deny", "Principal": "*"})
    assert not state_bucket.statement_is_public(
        {"Effect": "Allow", "Principal": "*", "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}
    )


# ---------------------------------------------------------------- recovery


def test_overwritten_state_is_recoverable_from_its_previous_version(s3_url, s3):
    assert run(s3_url) == 0
    good = json.dumps({"version": 3, "checkpoint": {"resources": ["a", "b"]}}).encode()
    bad = json.dumps({"version": 3, "checkpoint": {"resources": []}}).encode()
    s3.put_object(Bucket=BUCKET, Key=STATE_KEY, Body=good)
    s3.put_object(Bucket=BUCKET, Key=STATE_KEY, Body=bad)
    s3.delete_object(Bucket=BUCKET, Key=STATE_KEY)

    versions = s3.list_object_versions(Bucket=BUCKET, Prefix=STATE_KEY)["Versions"]
    assert len(versions) == 2
    assert not any(v["IsLatest"] for v in versions), "the delete marker is the latest"
    oldest = versions[-1]  # S3 lists a key's versions newest first
    body = s3.get_object(Bucket=BUCKET, Key=STATE_KEY, VersionId=oldest["VersionId"])["Body"].read()
    assert body == good
    # Restore it as the current state, as an operator would.
    s3.copy_object(
        Bucket=BUCKET,
        Key=STATE_KEY,
        CopySource={"Bucket": BUCKET, "Key": STATE_KEY, "VersionId": oldest["VersionId"]},
    )
    assert s3.get_object(Bucket=BUCKET, Key=STATE_KEY)["Body"].read() == good


# ---------------------------------------------------------------- errors


def assert_one_line_error(proc: Any, *needles: str) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("state_bucket: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert SECRET_ACCESS_KEY not in proc.stderr + proc.stdout
    return lines[0]


def test_unreachable_endpoint_is_one_clear_line(s3_url, closed_port):
    endpoint = f"http://127.0.0.1:{closed_port}"
    proc = run_cli("state_bucket", "--bucket", BUCKET, "--endpoint", endpoint, "--region", REGION)
    assert_one_line_error(proc, f"cannot reach the S3 endpoint {endpoint}", "check the URL")


def test_unknown_access_key_is_one_clear_line(s3_url, iam_auth):
    proc = run_cli("state_bucket", "--bucket", BUCKET, "--endpoint", s3_url, "--region", REGION)
    line = assert_one_line_error(
        proc, "refused the credentials (access key id TEST...)", "InvalidAccessKeyId"
    )
    assert "TESTKEYID0123456789A" not in line, "only the first characters of the key id"


def test_wrong_secret_is_one_clear_line(s3_url, iam_auth):
    env = {"AWS_ACCESS_KEY_ID": iam_auth.access_key_id, "AWS_SECRET_ACCESS_KEY": "wrong-secret-0123456789"}
    proc = run_cli("state_bucket", "--bucket", BUCKET, "--endpoint", s3_url, "--region", REGION, env=env)
    line = assert_one_line_error(
        proc, "SignatureDoesNotMatch", f"(access key id {iam_auth.access_key_id[:4]}...)"
    )
    assert "wrong-secret" not in line


def test_valid_key_passes_with_authentication_on(s3_url, iam_auth):
    """The positive control: the same moto with auth on accepts a real IAM key."""
    env = {"AWS_ACCESS_KEY_ID": iam_auth.access_key_id, "AWS_SECRET_ACCESS_KEY": iam_auth.secret_access_key}
    proc = run_cli(
        "state_bucket", "--bucket", BUCKET, "--endpoint", s3_url, "--region", REGION, "--json", env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["created"] is True
    assert iam_auth.secret_access_key not in proc.stdout + proc.stderr


def test_missing_credentials(s3_url, monkeypatch, capsys):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert run(s3_url) == 1
    assert "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in capsys.readouterr().err


# ---------------------------------------------------------------- unsupported APIs


class Stubbed:
    """A real client whose named methods fail with a given S3 error instead.

    Stands in for services that lack an API (or deny it), which moto cannot
    be made to do.
    """

    def __init__(self, client: Any, failures: dict[str, tuple[str, int]]) -> None:
        self._client, self._failures = client, failures

    def __getattr__(self, name: str) -> Any:
        if name in self._failures:
            code, status = self._failures[name]

            def fail(**_: Any) -> Any:
                raise ClientError(
                    {
                        "Error": {"Code": code, "Message": "stubbed"},
                        "ResponseMetadata": {"HTTPStatusCode": status},
                    },
                    name,
                )

            return fail
        return getattr(self._client, name)


NOT_IMPLEMENTED = ("NotImplemented", 501)


def test_unsupported_apis_are_reported_not_fatal(s3_url, s3, capsys):
    stub = Stubbed(
        s3,
        {
            "get_public_access_block": NOT_IMPLEMENTED,
            "get_bucket_encryption": NOT_IMPLEMENTED,
            "get_bucket_lifecycle_configuration": NOT_IMPLEMENTED,
            "get_bucket_policy_status": NOT_IMPLEMENTED,
        },
    )
    code, out = run_json(s3_url, capsys, client=stub)
    assert code == 0
    assert sorted(out["unsupported"]) == ["encryption", "lifecycle", "publicAccessBlock"]
    assert out["settings"]["versioning"] == "Enabled" and out["settings"]["acl"] == "private"
    # The ACL and policy checks still ran (the policy through GetBucketPolicy).
    code, out = run_json(s3_url, capsys, client=stub)
    assert code == 0 and out["changed"] is False


def test_put_refused_as_unsupported_is_reported(s3_url, s3, capsys):
    stub = Stubbed(s3, {"put_bucket_encryption": ("NotImplemented", 501)})
    code, out = run_json(s3_url, capsys, client=stub)
    assert code == 0
    assert out["settings"]["encryption"] == "unsupported"


@pytest.mark.parametrize(
    "method", ["get_bucket_encryption", "put_public_access_block", "get_bucket_lifecycle_configuration"]
)
def test_access_denied_on_an_optional_api_is_fatal(s3_url, s3, capsys, method):
    assert run(s3_url, client=Stubbed(s3, {method: ("AccessDenied", 403)})) == 1
    assert "access denied by" in capsys.readouterr().err


def test_usage_errors(capsys, monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("PULUMI_STATE_BUCKET", raising=False)
    with pytest.raises(SystemExit) as exc:
        state_bucket.main([])
    assert exc.value.code == 2
    assert "missing --bucket and --region" in capsys.readouterr().err


def test_plain_client_sees_it_too(s3_url):
    """The bucket the tool made is usable by any S3 client (here: plain boto3)."""
    assert run(s3_url) == 0
    client = s3_client(s3_url)
    client.put_object(Bucket=BUCKET, Key=STATE_KEY, Body=b"{}")
    assert client.get_object(Bucket=BUCKET, Key=STATE_KEY)["Body"].read() == b"{}"


def test_policy_status_answered_oddly_falls_back_to_reading_the_policy(s3_url, s3, capsys):
    """Services that lack GetBucketPolicyStatus answer it in various ways; the policy is read instead."""
    make_existing(s3, versioning="Enabled")
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "s3:*"}],
    }
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
    stub = Stubbed(s3, {"get_bucket_policy_status": ("InvalidRequest", 400)})
    assert run(s3_url, client=stub) == state_bucket.EXIT_REFUSED
    assert "bucket policy allows principal * without a condition" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["get_bucket_versioning", "put_bucket_versioning"])
def test_a_service_without_versioning_is_refused(s3_url, s3, capsys, method):
    assert run(s3_url, client=Stubbed(s3, {method: NOT_IMPLEMENTED})) == 1
    assert "does not support bucket versioning" in capsys.readouterr().err


def test_an_unexpected_unsupported_api_is_one_line(s3_url, s3, capsys):
    make_existing(s3, versioning="Enabled", acl="public-read")
    assert run(s3_url, "--adopt-existing", client=Stubbed(s3, {"put_bucket_acl": NOT_IMPLEMENTED})) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("state_bucket: error: ") and "Traceback" not in err
