"""Every text generated from the settings' declarations is what the
declarations render: a hand edit of Pulumi.yaml's config block, the
README's configuration table or the host variables table fails here."""

from __future__ import annotations

import pytest
import yaml

from components.pipeline import VARIABLES
from components.settings.declarations import SETTINGS, TOP_LEVEL_KEYS
from components.settings.generated import COMMAND, GENERATED, main
from components.settings.model import NAMESPACE, PROJECT_ROOT


@pytest.mark.parametrize("generated", GENERATED, ids=[g.path for g in GENERATED])
def test_generated_text_matches_its_declarations(generated):
    assert generated.current() == generated.render(), f"{generated.path} was edited by hand; run `{COMMAND}`"


def test_a_hand_edit_is_caught_and_the_writer_restores_it(tmp_path, monkeypatch, capsys):
    """Proves the check can fail: a copy of the tree with one edited row."""
    import components.settings.generated as gen

    for g in GENERATED:
        target = tmp_path / g.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text((PROJECT_ROOT / g.path).read_text())
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace("| `endpoint.port` | `2376` |", "| `endpoint.port` | `2377` |"))
    monkeypatch.setattr(gen, "PROJECT_ROOT", tmp_path)
    assert main(["--check"]) == 1
    assert "README.md" in capsys.readouterr().err
    assert main(["--write"]) == 0 and main(["--check"]) == 0


def test_pulumi_yaml_documents_every_top_level_setting_and_nothing_else():
    config = yaml.safe_load((PROJECT_ROOT / "Pulumi.yaml").read_text())["config"]
    assert list(config) == [f"{NAMESPACE}:{k}" for k in TOP_LEVEL_KEYS]
    assert [k for k, v in config.items() if v.get("secret")] == [f"{NAMESPACE}:dedicatedSshKey"]


def test_every_setting_has_a_readme_row_and_every_host_variable_a_contract_row():
    readme = (PROJECT_ROOT / "README.md").read_text()
    contract = (PROJECT_ROOT / "docs" / "host-contract.md").read_text()
    for s in SETTINGS:
        assert f"| `{s.key}` |" in readme, s.key
    for name in VARIABLES:
        assert f"| `{name}` |" in contract, name
