"""hostlab: a real Debian 13 guest under QEMU, reached over SSH on loopback."""
