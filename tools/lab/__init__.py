"""The lab: a Debian 13 guest under QEMU on this machine, as a local host.

Operator tool (`python -m tools.lab up|down|status`, cli.py) and the parts
the hostlab tests build on:

- image.py + build_guest_image.sh: the guest image, built from Debian's
  archive and cached by recipe;
- vm.py: one guest (overlay, NoCloud seed, QEMU, SSH on loopback, named
  snapshots, sshd's journal on a second serial port for diagnostics);
- harness.py: the program under Pulumi's mocks, recorded (shared with the
  tests, whose deterministic stand-ins stay in tests/support/program.py);
  program.py: the lab's stand-ins (random keys and certificates, kept);
- replay.py: the program's recorded remote steps run over SSH as
  pulumi-command runs them.

Nothing here imports from tests/ (tests/hostlab/test_lab_parts.py checks):
the mocks' deterministic keys and fixed dates never reach a user's lab.
"""
