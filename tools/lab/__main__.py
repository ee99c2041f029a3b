"""`python -m tools.lab up|down|status` (see tools/lab/cli.py)."""

from tools.lab.cli import main

raise SystemExit(main())
