"""A template migration adds a key to a model-owned YAML file and touches nothing else."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines.template.migrate import add_key

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
