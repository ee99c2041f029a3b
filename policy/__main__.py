"""Entry point the Pulumi CLI runs: `pulumi preview --policy-pack policy`.

Building `PolicyPack` starts the analyzer's gRPC server and blocks, so this
file does nothing else; the policies live in `rules.py`, which the tests
import. The CLI runs this file with the pack directory first on sys.path.
"""

from pulumi_policy import EnforcementLevel, PolicyPack
from rules import PACK_NAME, POLICIES

PolicyPack(
    name=PACK_NAME,
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=POLICIES,
)
