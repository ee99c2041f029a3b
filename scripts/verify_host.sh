#!/usr/bin/env bash
# Verify a runtime host through its real endpoint (docs/host-contract.md, "The
# verify report"): the check table in host_verify/ (Python, standard library
# only), shipped in the payload beside this script. This wrapper keeps the
# pipeline's entry: the verify step's variables and stdin (the CA
# certificate, the verify client's certificate and key, PEM) pass through
# unchanged, and host_verify reads the contract (contract/host.env) itself.
# One line per check on stderr; the report (host_verify/report.py) ALWAYS on
# stdout; the first failed check exits with its family's code
# (host_verify/failures.py).
#   verify_host.sh --only NAME,...   a named subset, with what it needs
#   verify_host.sh --list            the table
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export FR_ROOT=${FR_ROOT:-$here}
export FR_SCRIPT_NAME=${FR_SCRIPT_NAME:-$(basename "$0")}
exec "${FR_PYTHON:-/usr/bin/python3}" -I "$here/host_verify/__main__.py" "$@"
