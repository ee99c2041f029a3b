"""A host's verify credential opens that host's dockerd only.

The verify client certificate and the CA bundles dockerd trusts come from
the program's own mocked run (real, deterministic crypto) for a two-host
stack, and `openssl verify` decides as dockerd's TLS stack would whether the
certificate chains to a trusted CA. Proves the per-host verifier CA; does
not prove dockerd loads the bundle (the hostlab's verify step does).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.program import config_from_stack_file, pem_blocks, run_program

ROOT = Path(__file__).resolve().parents[2]


def two_host_run():
    config = config_from_stack_file(ROOT / "Pulumi.dev.yaml")
    hosts = config["functions-runtime:hosts"]
    config["functions-runtime:hosts"] = [{**hosts[0], "count": 2}]
    return run_program(config, stack="dev")


def chains(cert: str, bundle: str, tmp_path: Path) -> subprocess.CompletedProcess:
    (tmp_path / "cert.pem").write_text(cert)
    (tmp_path / "bundle.pem").write_text(bundle)
    return subprocess.run(
        ["openssl", "verify", "-purpose", "sslclient", "-CAfile", str(tmp_path / "bundle.pem"),
         str(tmp_path / "cert.pem")],
        capture_output=True, text=True,
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl (.ci/setup installs it)")
def test_a_hosts_verify_certificate_is_refused_by_every_other_host(tmp_path):
    run = two_host_run()
    trusted = {}  # host -> the CA bundle its dockerd trusts (configure stdin: stack CA + verifier CA)
    verify_cert = {}
    for host in ("cloud-1", "cloud-2"):
        stack_ca, verifier_ca, _server_cert, _server_key = pem_blocks(run.named(f"{host}-configure").plain["stdin"])
        trusted[host] = stack_ca + verifier_ca
        _ca, cert, _key = pem_blocks(run.named(f"{host}-verify").plain["stdin"])
        verify_cert[host] = cert
    assert trusted["cloud-1"] != trusted["cloud-2"]
    own = chains(verify_cert["cloud-1"], trusted["cloud-1"], tmp_path)
    assert own.returncode == 0, own.stdout + own.stderr
    other = chains(verify_cert["cloud-1"], trusted["cloud-2"], tmp_path)
    assert other.returncode != 0 and "unable to get local issuer certificate" in other.stdout + other.stderr
    # Nor does the stack CA (which consumers' certificates chain to) sign it.
    stack_ca = pem_blocks(trusted["cloud-1"])[0]
    assert chains(verify_cert["cloud-1"], stack_ca, tmp_path).returncode != 0
