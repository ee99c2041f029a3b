"""gvisor.* settings: which runsc a gVisor host runs.

`parse_settings` directly (no Pulumi engine): the values accepted, each
refusal naming its config key, and the catalog rows gvisor.runsc: release
needs. That the scripts receive the value is test_pipeline.py's; what they
do with it is tests/scripts'.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from components.settings import PROJECT_ROOT, parse_settings
from tests.unit.test_settings import GOOD, HOST_KEY, problems_of


def config(**gvisor: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(GOOD)
    if gvisor:
        cfg["gvisor"] = gvisor
    return cfg


def test_the_pinned_release_on_gvisors_own_network_stack_is_the_default():
    gvisor = parse_settings(config(), "test").gvisor
    assert gvisor.runsc == "release" and gvisor.allow_host_network_stack is False


@pytest.mark.parametrize("value", [True, "true"])
def test_host_networking_is_an_explicit_opt_in(value):
    gvisor = parse_settings(config(runsc="debian", allowHostNetworkStack=value), "test").gvisor
    assert gvisor.allow_host_network_stack is True


def test_debians_package_is_an_explicit_choice():
    assert parse_settings(config(runsc="debian"), "test").gvisor.runsc == "debian"


@pytest.mark.parametrize(
    ("gvisor", "config_key", "words"),
    [
        ({"runsc": "nightly"}, "functions-runtime:gvisor.runsc", "must be 'release'"),
        ({"runsc": 7}, "functions-runtime:gvisor.runsc", "expected a non-empty string"),
        ({"runsc": "release debian"}, "functions-runtime:gvisor.runsc", "must be 'release'"),
        ({"netstack": "host"}, "functions-runtime:gvisor", "unknown field(s) netstack"),
        ({"allowHostNetworkStack": "yes"}, "functions-runtime:gvisor.allowHostNetworkStack", "expected true or false"),
    ],
)
def test_a_bad_gvisor_value_is_refused_naming_its_key(gvisor, config_key, words):
    problems = problems_of(config(**gvisor))
    ours = [p for p in problems if p.startswith(config_key + ":")]
    assert ours and words in ours[0], problems


def catalog_without_gvisor(tmp_path: Path) -> Path:
    text = (PROJECT_ROOT / "catalog" / "artifacts.tsv").read_text()
    kept = [line for line in text.splitlines() if not line.startswith("gvisor\t")]
    path = tmp_path / "artifacts.tsv"
    path.write_text("\n".join(kept) + "\n")
    return path


def with_catalog(cfg: dict[str, Any], catalog: Path) -> dict[str, Any]:
    cfg["artifacts"] = {"catalog": str(catalog), "localDirs": [str(catalog.parent)]}
    return cfg


def test_the_release_needs_gvisors_rows_in_the_catalog(tmp_path):
    catalog = catalog_without_gvisor(tmp_path)
    problems = problems_of(with_catalog(config(), catalog))
    (problem,) = [p for p in problems if p.startswith("functions-runtime:artifacts.catalog:")]
    assert "has no row 'gvisor' (gVisor's release archive, gvisor-x86_64.tar.bz2)" in problem
    assert "gvisor.runsc: release" in problem and "gvisor.runsc: debian" in problem
    assert "loose files" not in problem


def test_a_catalog_with_the_loose_files_of_an_old_release_is_told_about_the_archive(tmp_path):
    """A stack's own catalog copied before 20260831: its runsc and shim rows name the old layout."""
    catalog = catalog_without_gvisor(tmp_path)
    old = ("runsc\t20260817.0\tsha512:" + "8" * 128 + "\thttps://storage.googleapis.com/gvisor/releases/release/"
           "20260817.0/x86_64/runsc\n")
    catalog.write_text(catalog.read_text() + old)
    problems = problems_of(with_catalog(config(), catalog))
    (problem,) = [p for p in problems if p.startswith("functions-runtime:artifacts.catalog:")]
    assert "its rows runsc are the loose files of releases before 20260831" in problem
    assert "docs/upgrading.md" in problem


def test_without_gvisors_rows_debian_or_a_vm_stack_needs_none(tmp_path):
    catalog = catalog_without_gvisor(tmp_path)
    assert parse_settings(with_catalog(config(runsc="debian"), catalog), "test").gvisor.runsc == "debian"
    vm = with_catalog(config(), catalog)
    vm["isolation"] = "vm"
    vm["hosts"] = [
        {
            "name": "metal",
            "source": "dedicated",
            "addresses": [{"address": "203.0.113.50", "privateAddress": "10.0.1.50", "hostKey": HOST_KEY}],
        }
    ]
    assert parse_settings(vm, "test").isolation == "vm"


def test_the_projects_catalog_pins_gvisor_as_published():
    """The release archive's sha256 as upstream's SHA256SUMS gives it (taken from two
    independent public pins, named in the catalog's comment); the loose files are gone."""
    catalog = parse_settings(config(), "test").artifacts.catalog
    archive = catalog["gvisor"]
    assert archive.version == "20260907.0"
    assert archive.digest == "sha256:81416511897ab8abd4e723d66823c5b0461a2ee3311cfa70d152404ef9b860cf"
    assert archive.url == (
        "https://github.com/google/gvisor/releases/download/release-20260907.0/gvisor-x86_64.tar.bz2"
    )
    assert "runsc" not in catalog and "containerd-shim-runsc-v1" not in catalog
    assert "azumag/docich" in catalog.text and "hakopod/hakopod" in catalog.text
    # x86_64 in gVisor's path counts as amd64: Cloud types stay allowed.
    assert catalog.architectures == {"amd64"}
