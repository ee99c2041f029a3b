"""tools/lab/program.py: the program run for a user's lab, without the engine.

Every key and certificate is random, valid from now, kept in the lab's state
directory (0600) and reused by the next run; the certificates chain and
name what the program asks for; the recorded steps are the program's own.
"""

from __future__ import annotations

import datetime as dt
import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from components.endpoint import read_client_tls, read_endpoint
from tests.support.program import passing_report
from tools.lab.program import LabProgramError, run_lab_program

ROOT = Path(__file__).resolve().parents[2]


def lab_config(tmp_path: Path, name: str = "keys") -> dict[str, Any]:
    keys = tmp_path / name
    keys.mkdir()
    for key in ("admin", "host"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / key)], check=True)
    config = yaml.safe_load((ROOT / "Pulumi.lab.yaml").read_text())["config"]
    config["functions-runtime:hosts"][0]["addresses"][0]["hostKey"] = " ".join(
        (keys / "host.pub").read_text().split()[:2]
    )
    config["functions-runtime:dedicatedSshKey"] = (keys / "admin").read_text()
    return config


def files(state: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((state / "program").iterdir())}


def certs(state: Path) -> dict[str, x509.Certificate]:
    return {
        name.removesuffix(".cert.json"): x509.load_pem_x509_certificate(json.loads(text)["certPem"].encode())
        for name, text in files(state).items()
        if name.endswith(".cert.json")
    }


def test_keys_and_certificates_are_fresh_kept_private_and_reused(tmp_path):
    config = lab_config(tmp_path)
    state = tmp_path / "state"
    before = dt.datetime.now(dt.UTC)
    run_lab_program(config, state)
    first = files(state)
    assert any(n.endswith(".key.json") for n in first) and any(n.endswith(".cert.json") for n in first)
    assert stat.S_IMODE((state / "program").stat().st_mode) == 0o700
    for path in (state / "program").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for name, cert in certs(state).items():
        # Valid from now (a few minutes' allowance for a guest clock behind ours), not a fixed day.
        assert before - dt.timedelta(minutes=10) < cert.not_valid_before_utc <= dt.datetime.now(dt.UTC), name

    run_lab_program(config, state)
    assert files(state) == first, "a second run must reuse the lab's keys and certificates"

    other = tmp_path / "other"
    run_lab_program(config, other)
    assert set(files(other)) == set(first)
    assert not set(files(other).values()) & set(first.values()), "another lab shares a key or certificate"


def test_certificates_chain_to_the_stack_ca_and_name_the_endpoint(tmp_path):
    state = tmp_path / "state"
    run_lab_program(lab_config(tmp_path), state)
    by_name = certs(state)
    ca = by_name["runtime-pki-ca"]
    server = by_name["lab-1-endpoint-cert"]
    client = by_name["runtime-pki-consumer-cert"]
    for leaf in (server, client):
        leaf.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    ekus = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.ExtendedKeyUsageOID.CLIENT_AUTH in ekus
    # The host's verifier client is signed by the host's own verifier CA, not the stack CA.
    by_name["lab-1-verifier-cert"].verify_directly_issued_by(by_name["lab-1-verifier-ca"])


def test_a_changed_key_gets_a_new_certificate(tmp_path):
    config = lab_config(tmp_path)
    state = tmp_path / "state"
    run_lab_program(config, state)
    old = certs(state)["lab-1-endpoint-cert"]
    (state / "program" / "lab-1-endpoint-key.key.json").unlink()
    run_lab_program(config, state)
    new = certs(state)["lab-1-endpoint-cert"]
    assert new.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != old.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_the_steps_are_the_programs_and_the_report_becomes_the_outputs(tmp_path):
    config = lab_config(tmp_path)
    state = tmp_path / "state"
    preview = run_lab_program(config, state)
    commands = [r for r in preview.resources if r.type == "command:remote:Command"]
    assert [r.name for r in commands][:2] == ["lab-1-wait", "lab-1-payload"]
    assert "lab-1-verify" in {r.name for r in commands}
    assert preview.outputs.get("runtimeEndpoint") is None  # no report yet

    report = passing_report("lab-1")
    done = run_lab_program(config, state, command_stdout=lambda name, _: report if name == "lab-1-verify" else "")
    endpoint = read_endpoint(done.outputs["runtimeEndpoint"])
    tls = read_client_tls(done.outputs["runtimeClientTls"])
    assert endpoint.ca_cert_pem == json.loads((state / "program" / "runtime-pki-ca.cert.json").read_text())["certPem"]
    assert tls.cert_pem == json.loads((state / "program" / "runtime-pki-consumer-cert.cert.json").read_text())["certPem"]


def test_hetzner_hosts_are_refused_by_name(tmp_path):
    config = lab_config(tmp_path)
    config["functions-runtime:hosts"] = [
        {"name": "cloud", "source": "hcloud", "count": 1, "serverType": "cx23", "location": "fsn1"}
    ]
    with pytest.raises(LabProgramError, match=r"hcloud:.* the lab adopts its guest as a dedicated host"):
        run_lab_program(config, tmp_path / "state")


def test_the_lab_stack_probes_the_internet_the_lab_serves():
    """Pulumi.lab.yaml's egress control is the address `lab up` serves in the guest."""
    from tools.lab.surroundings import INTERNET_PORTS, NAME_PROBE, OUTSIDE_PROBE

    config = yaml.safe_load((ROOT / "Pulumi.lab.yaml").read_text())["config"]
    assert config["functions-runtime:verify"]["outsideProbe"] == OUTSIDE_PROBE
    assert OUTSIDE_PROBE.endswith(f":{INTERNET_PORTS[0]}")
    # The name the lab's name server answers for.
    assert config["functions-runtime:verify"]["nameProbe"] == NAME_PROBE
