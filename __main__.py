"""functions-runtime: verified sandbox-runtime hosts and their endpoint.

Reads the stack's settings (every problem reported at once, before any
resource exists), builds the fleet, and exports only what was verified.
"""

import pulumi

from components.fleet import RuntimeFleet
from components.settings import read_settings

settings = read_settings()
fleet = RuntimeFleet("runtime", settings)

pulumi.export("runtimeEndpoint", fleet.runtime_endpoint)
pulumi.export("runtimeClientTls", fleet.runtime_client_tls)
# What the install steps fetched, by source: one archive's worth per fleet, not one per host.
pulumi.export("artifactDownloads", fleet.artifact_downloads)
if fleet.golden_image is not None:
    pulumi.export("goldenImage", fleet.golden_image)
