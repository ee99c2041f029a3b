"""Create or check the S3 bucket that holds this project's Pulumi state.

Teams without Pulumi Cloud keep state in S3-compatible object storage
(Hetzner Object Storage). State is the only record of what Pulumi manages, so
the bucket must never lose a version and never be readable by the world:

- versioning on, so an overwritten or deleted state file can be recovered;
- public access blocked (PublicAccessBlock where the service has it), and no
  public ACL grant or public bucket policy in any case;
- default server-side encryption (SSE-S3, AES256) where the service has it;
- one lifecycle rule that expires noncurrent versions after N days, so history
  is kept for a bounded time and current state never expires.

Idempotent: each setting is read first and written only when it differs; a
second run changes nothing and says "no changes". An existing bucket that is
public or unversioned is refused unless --adopt-existing is given: its state
may already be exposed or its history already lost, and someone should look
before this tool declares it fit.

    python -m tools.state_bucket --bucket acme-pulumi-state \\
        --endpoint https://fsn1.your-objectstorage.com --region fsn1

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and are never
printed. Human log on stderr; stdout carries the `pulumi login` line, or with
--json a summary document. Exit codes: 0 done (or compliant with --check),
1 error, 2 usage, 3 refused an existing bucket, 4 --check found drift.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tools.s3 import (
    CREDENTIAL_ERROR_CODES,
    PERMISSION_ERROR_CODES,
    ToolError,
    endpoint_from_env,
    error_code,
    explain,
    is_unsupported,
    log,
    make_client,
    normalize_endpoint,
    pulumi_login_url,
    region_from_env,
)

TOOL = "state_bucket"
EXIT_REFUSED = 3
EXIT_DRIFT = 4
# How long superseded state versions are kept by default: long enough to
# notice and undo a bad `pulumi up` or a broken import well after the fact.
DEFAULT_NONCURRENT_DAYS = 90
LIFECYCLE_RULE_ID = "functions-runtime-expire-noncurrent-state"
PUBLIC_GROUP_URIS = (
    "http://acs.amazonaws.com/groups/global/AllUsers",
    "http://acs.amazonaws.com/groups/global/AuthenticatedUsers",
)
BLOCK_ALL = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
SSE_ALGORITHM = "AES256"


@dataclass
class Report:
    """What the run found and did; printed as JSON with --json."""

    bucket: str
    endpoint: str | None
    region: str
    created: bool = False
    changes: list[str] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    unsupported: list[str] = field(default_factory=list)
    pulumi_login: str = ""
    check_only: bool = False  # with --check, `changes` lists what would change

    def not_supported(self, setting: str, message: str) -> None:
        """The service does not support `setting`: say so (`message`) and record it."""
        log(TOOL, message)
        self.unsupported.append(setting)
        self.settings[setting] = "unsupported"

    def as_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["ok"] = True
        doc["changed"] = bool(self.changes) and not self.check_only
        doc.pop("check_only")
        doc["pulumiLogin"] = doc.pop("pulumi_login")
        return doc


class Bucket:
    """One bucket on one service, with every call's failure worded for an operator."""

    def __init__(self, client: Any, name: str, endpoint: str | None, region: str, apply: bool) -> None:
        self.client, self.name, self.endpoint, self.region, self.apply = client, name, endpoint, region, apply

    def call(
        self, method: str, doing: str, missing: tuple[str, ...] = (), **kwargs: Any
    ) -> dict[str, Any] | None:
        """Call an S3 API; None when the error code says "not configured".

        Unsupported APIs raise ClientError on to the caller (which reports
        them); every other failure becomes a ToolError.
        """
        try:
            return getattr(self.client, method)(Bucket=self.name, **kwargs)
        except ClientError as err:
            if error_code(err) in missing:
                return None
            if is_unsupported(err):
                raise
            raise explain(err, self.endpoint, doing) from None
        except BotoCoreError as err:
            raise explain(err, self.endpoint, doing) from None


# ---------------------------------------------------------------- checks


def versioning_status(bucket: Bucket) -> str | None:
    """'Enabled', 'Suspended', 'never enabled', or None when the bucket does not exist.

    GetBucketVersioning doubles as the existence probe because, unlike
    HeadBucket, its errors carry a code that tells a missing bucket from bad
    credentials.
    """
    try:
        out = bucket.call("get_bucket_versioning", f"reading bucket {bucket.name}", missing=("NoSuchBucket",))
    except ClientError:
        raise versioning_unsupported(bucket) from None
    if out is None:
        return None
    return str(out.get("Status") or "never enabled")


def versioning_unsupported(bucket: Bucket) -> ToolError:
    """Versioning is the one setting this tool cannot do without."""
    return ToolError(
        f"{bucket.endpoint or 'this service'} does not support bucket versioning: an overwritten "
        "state file could not be recovered; keep Pulumi state on a service that versions objects"
    )


def public_acl_grants(bucket: Bucket) -> list[str]:
    """ACL grants to everyone or to every authenticated user."""
    try:
        acl = bucket.call("get_bucket_acl", f"reading the ACL of {bucket.name}") or {}
    except ClientError:
        return []  # no ACL API on this service: nothing can be granted through it
    found = []
    for grant in acl.get("Grants", []):
        uri = grant.get("Grantee", {}).get("URI", "")
        if uri in PUBLIC_GROUP_URIS:
            found.append(f"ACL grants {grant.get('Permission')} to {uri.rsplit('/', 1)[-1]}")
    return found


def statement_is_public(statement: dict[str, Any]) -> bool:
    """An Allow statement for any principal with no condition narrowing it."""
    if statement.get("Effect") != "Allow" or statement.get("Condition"):
        return False
    principal = statement.get("Principal")
    if principal == "*":
        return True
    if isinstance(principal, dict):
        aws = principal.get("AWS")
        return aws == "*" or (isinstance(aws, list) and "*" in aws)
    return False


def public_policy(bucket: Bucket) -> list[str]:
    """A bucket policy that lets anyone in.

    Asks the service (GetBucketPolicyStatus) where it can answer, else reads
    the policy itself: an unconditioned Allow for principal "*".
    """
    doing = f"reading the bucket policy of {bucket.name}"
    try:
        status = bucket.client.get_bucket_policy_status(Bucket=bucket.name)
        return ["bucket policy is public"] if status.get("PolicyStatus", {}).get("IsPublic") else []
    except ClientError as err:
        if error_code(err) == "NoSuchBucketPolicy":
            return []
        if error_code(err) in CREDENTIAL_ERROR_CODES | PERMISSION_ERROR_CODES:
            raise explain(err, bucket.endpoint, doing) from None
        # Newer than the rest of the S3 API and missing from several
        # S3-compatible services, which answer it in various ways: read the
        # policy instead.
    except BotoCoreError as err:
        raise explain(err, bucket.endpoint, doing) from None
    try:
        out = bucket.call("get_bucket_policy", doing, missing=("NoSuchBucketPolicy",))
    except ClientError:
        return []  # no bucket policies on this service
    if out is None:
        return []
    statements = json.loads(out.get("Policy") or "{}").get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    if any(statement_is_public(s) for s in statements):
        return ["bucket policy allows principal * without a condition"]
    return []


# ---------------------------------------------------------------- steps


def create_bucket(bucket: Bucket, report: Report) -> None:
    log(TOOL, f"bucket {bucket.name} does not exist, creating it")
    kwargs: dict[str, Any] = {}
    if bucket.region != "us-east-1":  # S3 rejects a LocationConstraint of us-east-1
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": bucket.region}
    try:
        bucket.client.create_bucket(Bucket=bucket.name, **kwargs)
    except ClientError as err:
        if error_code(err) == "BucketAlreadyExists":
            raise ToolError(
                f"bucket name {bucket.name} is taken by another account on {bucket.endpoint or 'AWS'}: "
                "choose another --bucket"
            ) from None
        if error_code(err) != "BucketAlreadyOwnedByYou":
            raise explain(err, bucket.endpoint, f"creating bucket {bucket.name}") from None
    except BotoCoreError as err:
        raise explain(err, bucket.endpoint, f"creating bucket {bucket.name}") from None
    report.created = True
    report.changes.append("created bucket")


def refuse_unsafe_existing(bucket: Bucket, status: str, exposure: list[str], adopt: bool) -> None:
    """Stop before touching an existing bucket that is public or unversioned."""
    problems = list(exposure)
    if status != "Enabled":
        problems.append(f"versioning is {status.lower()}")
    if not problems:
        return
    if adopt:
        log(TOOL, f"adopting existing bucket {bucket.name} despite: {'; '.join(problems)} (--adopt-existing)")
        return
    raise ToolError(
        f"refusing to modify existing bucket {bucket.name}: {'; '.join(problems)}. Its state may already "
        "be exposed or its history lost; review it, then re-run with --adopt-existing to bring it under "
        "these settings, or choose a new --bucket",
        EXIT_REFUSED,
    )


def ensure_versioning(bucket: Bucket, status: str, report: Report) -> None:
    if status == "Enabled":
        log(TOOL, "versioning: enabled, no change")
    else:
        log(TOOL, f"versioning: {status.lower()}, {'enabling' if bucket.apply else 'would enable'}")
        if bucket.apply:
            try:
                bucket.call(
                    "put_bucket_versioning",
                    f"enabling versioning on {bucket.name}",
                    VersioningConfiguration={"Status": "Enabled"},
                )
            except ClientError:
                raise versioning_unsupported(bucket) from None
        report.changes.append("enabled versioning")
    report.settings["versioning"] = "Enabled"


def ensure_public_access_block(bucket: Bucket, report: Report) -> None:
    doing = f"blocking public access on {bucket.name}"
    try:
        out = bucket.call("get_public_access_block", doing, missing=("NoSuchPublicAccessBlockConfiguration",))
        current = (out or {}).get("PublicAccessBlockConfiguration", {})
        if all(current.get(k) is True for k in BLOCK_ALL):
            log(TOOL, "public access block: all four settings on, no change")
        else:
            log(
                TOOL,
                f"public access block: {current or 'none'}, {'setting' if bucket.apply else 'would set'} all four",
            )
            if bucket.apply:
                bucket.call("put_public_access_block", doing, PublicAccessBlockConfiguration=dict(BLOCK_ALL))
            report.changes.append("blocked public access")
        report.settings["publicAccessBlock"] = "all"
    except ClientError:
        report.not_supported(
            "publicAccessBlock",
            "public access block: NOT SUPPORTED by this service; the bucket stays private only "
            "through its ACL and policy, which are checked below",
        )


def ensure_private_acl(bucket: Bucket, report: Report) -> None:
    grants = public_acl_grants(bucket)
    if not grants:
        log(TOOL, "ACL: no public grant, no change")
    else:
        log(
            TOOL,
            f"ACL: {'; '.join(grants)}, {'resetting to private' if bucket.apply else 'would reset to private'}",
        )
        if bucket.apply:
            bucket.call("put_bucket_acl", f"making the ACL of {bucket.name} private", ACL="private")
        report.changes.append("reset ACL to private")
    report.settings["acl"] = "private"


def ensure_no_public_policy(bucket: Bucket, report: Report) -> None:
    """Never edits a policy: someone wrote it, and only they know what else it grants."""
    found = public_policy(bucket)
    if found:
        raise ToolError(
            f"bucket {bucket.name}: {'; '.join(found)}; remove the public statements from the bucket "
            "policy (or the policy: aws s3api delete-bucket-policy), then re-run"
        )
    log(TOOL, "bucket policy: none public, no change")
    report.settings["policy"] = "not public"


def ensure_encryption(bucket: Bucket, report: Report) -> None:
    doing = f"setting default encryption on {bucket.name}"
    try:
        out = bucket.call(
            "get_bucket_encryption", doing, missing=("ServerSideEncryptionConfigurationNotFoundError",)
        )
    except ClientError:
        report.not_supported(
            "encryption",
            "default encryption: NOT SUPPORTED by this service (no SSE-S3); state secrets are still "
            "encrypted by the stack's secrets provider",
        )
        return
    rules = (out or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    algorithms = {r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules} - {None}
    if algorithms:
        # aws:kms is stronger than AES256: leave a deliberate choice alone.
        algorithm = sorted(algorithms)[0]
        log(TOOL, f"default encryption: {algorithm}, no change")
        report.settings["encryption"] = algorithm
        return
    log(TOOL, f"default encryption: none, {'setting' if bucket.apply else 'would set'} {SSE_ALGORITHM}")
    if bucket.apply:
        try:
            bucket.call(
                "put_bucket_encryption",
                doing,
                ServerSideEncryptionConfiguration={
                    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": SSE_ALGORITHM}}]
                },
            )
        except ClientError:
            report.not_supported(
                "encryption", "default encryption: NOT SUPPORTED by this service (it refused SSE-S3)"
            )
            return
    report.changes.append(f"set default encryption {SSE_ALGORITHM}")
    report.settings["encryption"] = SSE_ALGORITHM


def lifecycle_rule(days: int) -> dict[str, Any]:
    return {
        "ID": LIFECYCLE_RULE_ID,
        "Status": "Enabled",
        "Filter": {"Prefix": ""},
        "NoncurrentVersionExpiration": {"NoncurrentDays": days},
    }


def rule_matches(rule: dict[str, Any], days: int) -> bool:
    """Our rule, as services echo it back (some drop the empty filter)."""
    prefix = rule.get("Filter", {}).get("Prefix", rule.get("Prefix", ""))
    return (
        rule.get("Status") == "Enabled"
        and not prefix
        and set(rule.get("Filter", {})) <= {"Prefix"}
        and rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == days
        and "Expiration" not in rule
    )


def ensure_lifecycle(bucket: Bucket, days: int, report: Report) -> None:
    doing = f"setting the lifecycle of {bucket.name}"
    try:
        out = bucket.call(
            "get_bucket_lifecycle_configuration", doing, missing=("NoSuchLifecycleConfiguration",)
        )
    except ClientError:
        report.not_supported(
            "lifecycle", "lifecycle: NOT SUPPORTED by this service; noncurrent versions are kept forever"
        )
        return
    rules = list((out or {}).get("Rules", []))
    ours = [r for r in rules if r.get("ID") == LIFECYCLE_RULE_ID]
    others = [r for r in rules if r.get("ID") != LIFECYCLE_RULE_ID]
    if len(ours) == 1 and rule_matches(ours[0], days):
        log(TOOL, f"lifecycle: noncurrent versions expire after {days} days, no change")
    else:
        state = "absent" if not ours else "different"
        log(
            TOOL,
            f"lifecycle: rule {LIFECYCLE_RULE_ID} {state}, {'writing' if bucket.apply else 'would write'} it "
            f"(keeping {len(others)} other rule(s))",
        )
        if bucket.apply:
            try:
                bucket.call(
                    "put_bucket_lifecycle_configuration",
                    doing,
                    LifecycleConfiguration={"Rules": [*others, lifecycle_rule(days)]},
                )
            except ClientError:
                report.not_supported(
                    "lifecycle", "lifecycle: NOT SUPPORTED by this service (it refused the rule)"
                )
                return
        report.changes.append(f"noncurrent versions expire after {days} days")
    report.settings["lifecycle"] = f"noncurrent versions expire after {days} days"


# ---------------------------------------------------------------- main


def reconcile(client: Any, args: argparse.Namespace) -> Report:
    """Bring the bucket to the settings above (or, with --check, only say what differs)."""
    bucket = Bucket(client, args.bucket, args.endpoint, args.region, apply=not args.check)
    report = Report(bucket=args.bucket, endpoint=args.endpoint, region=args.region, check_only=args.check)
    report.pulumi_login = pulumi_login_url(args.bucket, args.endpoint, args.region)
    status = versioning_status(bucket)
    where = f"{args.endpoint or 'AWS S3'} ({args.region})"
    log(TOOL, f"bucket {args.bucket} on {where}: {'absent' if status is None else 'exists'}")
    if status is None:
        if args.check:
            report.changes.append("create bucket")
            log(TOOL, f"bucket {args.bucket} does not exist (--check: not creating it)")
            return report
        create_bucket(bucket, report)
        status = "never enabled"
    else:
        refuse_unsafe_existing(
            bucket, status, public_acl_grants(bucket) + public_policy(bucket), args.adopt_existing
        )
    ensure_versioning(bucket, status, report)
    ensure_public_access_block(bucket, report)
    ensure_private_acl(bucket, report)
    ensure_no_public_policy(bucket, report)
    ensure_encryption(bucket, report)
    ensure_lifecycle(bucket, args.noncurrent_days, report)
    return report


def print_advice(report: Report) -> None:
    log(TOOL, "log in to this backend with:")
    log(TOOL, f"  pulumi login '{report.pulumi_login}'")
    log(TOOL, "create each stack with a secrets provider that is not in the state bucket, e.g.:")
    log(TOOL, "  pulumi stack init dev --secrets-provider=passphrase   (set PULUMI_CONFIG_PASSPHRASE)")
    log(
        TOOL,
        "  pulumi stack init prod --secrets-provider='awskms://alias/<key>?region=<region>'  (or hashivault://<key>)",
    )
    log(TOOL, "keep the passphrase in a password manager and CI secrets; never commit it")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.state_bucket",
        description="Create or check the S3 bucket for Pulumi state: versioned, private, encrypted "
        "where supported, noncurrent versions expiring. Idempotent.",
    )
    parser.add_argument(
        "--bucket",
        default=os.environ.get("PULUMI_STATE_BUCKET"),
        help="bucket name (env PULUMI_STATE_BUCKET)",
    )
    parser.add_argument(
        "--endpoint",
        default=endpoint_from_env(),
        help="S3 endpoint URL, e.g. https://fsn1.your-objectstorage.com "
        "(env AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL; omit for AWS S3)",
    )
    parser.add_argument(
        "--region", default=region_from_env(), help="region, e.g. fsn1 (env AWS_REGION or AWS_DEFAULT_REGION)"
    )
    parser.add_argument(
        "--noncurrent-days",
        type=int,
        default=DEFAULT_NONCURRENT_DAYS,
        help=f"expire superseded state versions after this many days (default {DEFAULT_NONCURRENT_DAYS})",
    )
    parser.add_argument(
        "--adopt-existing",
        action="store_true",
        help="allow bringing an existing public or unversioned bucket under these settings",
    )
    parser.add_argument("--check", action="store_true", help="change nothing; exit 4 if anything differs")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    args = parser.parse_args(argv)
    missing = [flag for flag, value in (("--bucket", args.bucket), ("--region", args.region)) if not value]
    if missing:
        parser.error(f"missing {' and '.join(missing)} (flag or environment)")
    if args.noncurrent_days < 1:
        parser.error("--noncurrent-days must be at least 1")
    args.endpoint = normalize_endpoint(args.endpoint)
    return args


def main(argv: list[str] | None = None, client: Any = None) -> int:
    """Entry point; `client` lets tests hand in a wrapped S3 client."""
    args = parse_args(argv)
    try:
        report = reconcile(client or make_client(args.endpoint, args.region), args)
    except (ClientError, BotoCoreError) as err:  # an unsupported API no step expected
        err = explain(err, args.endpoint, f"bucket {args.bucket}")
        log(TOOL, f"error: {err}")
        if args.json:
            print(json.dumps({"ok": False, "bucket": args.bucket, "error": str(err)}))
        return err.exit_code
    except ToolError as err:
        log(TOOL, f"error: {err}")
        if args.json:
            print(json.dumps({"ok": False, "bucket": args.bucket, "error": str(err)}))
        return err.exit_code
    if not report.changes:
        log(TOOL, "no changes")
    else:
        log(TOOL, ("would change: " if args.check else "changes: ") + "; ".join(report.changes))
    if report.unsupported:
        log(TOOL, f"not supported by this service: {', '.join(report.unsupported)}")
    print_advice(report)
    if args.json:
        print(json.dumps(report.as_json(), indent=2, sort_keys=True))
    else:
        print(f"pulumi login '{report.pulumi_login}'")
    if args.check and report.changes:
        return EXIT_DRIFT
    return 0


if __name__ == "__main__":
    sys.exit(main())
