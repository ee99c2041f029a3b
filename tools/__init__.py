"""Operator tools run next to the Pulumi program (`python -m tools.<name>`).

They talk to S3-compatible object storage only: the state bucket that holds
Pulumi's state (tools.state_bucket) and the published, non-secret endpoint
document that consumers read (tools.publish_endpoint).
"""
