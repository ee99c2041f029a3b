"""Fixtures for the host-script tests (defined in helpers.py)."""

from tests.scripts.helpers import fr_env, http_server  # noqa: F401
