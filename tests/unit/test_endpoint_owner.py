"""The consumer side gives the endpoint policy's owner label: the common
name of the client certificate the stack exports (under the mocks, real
deterministic crypto). The policy's side of the rule is tested in
test_endpoint_ownership.py; that dockerd carries the label, in the hostlab."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.contract import AUTHZ_OWNER_LABEL, CONSUMER_COMMON_NAME
from components.endpoint import ClientTls, EndpointError, read_client_tls
from endpoint_authz.rules import OWNER_LABEL
from tests.support.program import config_from_stack_file, run_program

ROOT = Path(__file__).resolve().parents[2]


def test_the_exported_client_certificate_names_its_owner_label():
    run = run_program(config_from_stack_file(ROOT / "Pulumi.dev.yaml"), stack="dev")
    tls = read_client_tls(run.outputs["runtimeClientTls"])
    assert tls.owner_labels == {OWNER_LABEL: CONSUMER_COMMON_NAME}
    assert AUTHZ_OWNER_LABEL == OWNER_LABEL


def test_a_certificate_that_is_not_one_is_refused_by_the_reader():
    with pytest.raises(EndpointError, match="certPem"):
        _ = ClientTls(ca_cert_pem="", cert_pem="-----BEGIN CERTIFICATE-----\nnot\n-----END CERTIFICATE-----\n",
                      key_pem="").owner_labels
