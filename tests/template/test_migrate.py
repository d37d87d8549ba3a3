"""A template migration adds a key to a model-owned YAML file and touches nothing else; the
template's migrations add what its params.yaml has."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines.template.migrate import add_key
from tests.support.columns import ROOT

PARAMS = """\
# Serving
serve:
  timeout: 10      # seconds
  request_log: 0.0 # share of requests logged,
                   # for `make monitor`

# Monitoring: the next section's heading
monitor:
  bins: 10
"""


def test_a_key_added_to_a_section_goes_above_the_next_sections_heading(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS)
    assert add_key(path, "serve.coverage", 0.9)
    assert path.read_text() == PARAMS.replace(
        "  # for `make monitor`\n", "  # for `make monitor`\n  coverage: 0.9\n"
    )


def test_a_new_section_goes_at_the_end_and_a_set_value_stays(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS)
    assert add_key(path, "alerts.window", 100)
    assert not add_key(path, "serve.timeout", 30)
    assert path.read_text() == PARAMS + "alerts:\n  window: 100\n"
    assert yaml.safe_load(path.read_text())["serve"]["timeout"] == 10


def test_the_template_migration_adds_the_committed_tune_section() -> None:
    """A repository made before tuning gets the same tune: on its template update."""
    migrations = yaml.safe_load((ROOT / "copier.yml").read_text())["_migrations"]
    added = [m for m in migrations if m[3:5] == ["params.yaml", "tune"]]
    assert len(added) == 1
    assert yaml.safe_load(added[0][5]) == yaml.safe_load((ROOT / "params.yaml").read_text())["tune"]


def test_the_template_migration_adds_the_committed_alerting_section() -> None:
    """A repository made before Alertmanager's routing gets the same alerting: on its update."""
    migrations = yaml.safe_load((ROOT / "copier.yml").read_text())["_migrations"]
    added = [m for m in migrations if m[3:5] == ["params.yaml", "alerting"]]
    assert len(added) == 1
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())["alerting"]
    assert yaml.safe_load(added[0][5]) == committed


def test_the_template_migrations_add_the_committed_fallback_settings() -> None:
    """A repository made before the fallback chain sees its deadline and breaker on update."""
    migrations = yaml.safe_load((ROOT / "copier.yml").read_text())["_migrations"]
    committed = yaml.safe_load((ROOT / "params.yaml").read_text())["serve"]
    for key in ("deadline_ms", "breaker_failures", "breaker_cooldown"):
        (added,) = [m for m in migrations if m[3:5] == ["params.yaml", f"serve.{key}"]]
        assert yaml.safe_load(added[5]) == committed[key]
