"""Host verification as a table of checks; standard library only (docs/host-contract.md, The verify report)."""
