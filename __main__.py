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
