"""The generated Alertmanager configuration, checked and routed by real `amtool`.

.ci/run installs amtool (Debian's `prometheus-alertmanager`); in CI (the CI variable set) a
missing amtool fails the tests that need it instead of skipping them. A real Alertmanager
delivers a real drift alert to a webhook in tests/e2e/test_served_monitoring.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipelines.monitoring import alertmanager, rules
from pipelines.params import AlertingParams, MonitorParams, RegisterParams, load_section
from tests.support.columns import PARAMS, ROOT

AMTOOL = shutil.which("amtool")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None and not os.environ.get("CI"),
    reason="amtool is not installed (apt-get install prometheus-alertmanager)",
)
ALERTING = load_section("alerting", AlertingParams, PARAMS)
MONITOR = load_section("monitor", MonitorParams, PARAMS)
MODEL = load_section("register", RegisterParams, PARAMS).model_name
COMMITTED = ROOT / "deploy" / "monitoring" / "alertmanager.yml"
RECEIVERS = alertmanager.receiver_names(MODEL)


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert AMTOOL is not None, "amtool is not installed: .ci/run installs prometheus-alertmanager"
    return subprocess.run([AMTOOL, *args], capture_output=True, text=True, check=False)


def routed(config: Path, **labels: str) -> str:
    """The receiver `amtool config routes test` sends an alert of ``labels`` to."""
    done = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={config}",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def every_alert() -> dict[str, str]:
    """Every alert the generated rules define (a multiclass model's too), with its severity."""
    groups = rules.rule_groups(MONITOR, MODEL, 3, "multiclass")
    return {
        r["alert"]: r["labels"]["severity"]
        for g in groups["groups"]
        for r in g["rules"]
        if "alert" in r
    }


def test_the_committed_file_is_the_generators_output() -> None:
    assert COMMITTED.read_text() == alertmanager.render(ALERTING, MODEL)


def test_no_secret_is_written_into_the_file() -> None:
    config = alertmanager.config(ALERTING, MODEL)
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            assert hook["http_config"]["authorization"] == {
                "credentials_file": ALERTING.webhook_token_file
            }
            assert "@" not in hook["url"]  # no credentials in the URL either
    assert "api_url_file:" in COMMITTED.read_text()  # the Slack example reads its URL from a file
    assert "api_url:" not in COMMITTED.read_text().replace("api_url_file:", "")


@needs_amtool
def test_amtool_accepts_the_committed_file_and_the_slack_example(tmp_path: Path) -> None:
    done = amtool("check-config", str(COMMITTED))
    assert done.returncode == 0, done.stdout + done.stderr
    # The commented Slack example, uncommented into the ticket receiver, is valid too.
    config = alertmanager.config(ALERTING, MODEL)
    example = "\n".join(
        line.removeprefix("#")
        for line in alertmanager.SLACK_EXAMPLE.splitlines()
        if line.startswith("#  ")
    )
    (ticket,) = [r for r in config["receivers"] if r["name"] == RECEIVERS["ticket"]]
    ticket |= yaml.safe_load(example)
    (tmp_path / "slack.yml").write_text(yaml.safe_dump(config))
    done = amtool("check-config", str(tmp_path / "slack.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


@needs_amtool
def test_amtool_rejects_a_broken_file(tmp_path: Path) -> None:
    config = alertmanager.config(ALERTING, MODEL)
    config["route"]["receiver"] = "nobody"
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(config))
    assert amtool("check-config", str(tmp_path / "broken.yml")).returncode != 0


@needs_amtool
def test_every_alert_of_the_rules_reaches_the_receiver_of_its_severity() -> None:
    alerts = every_alert()
    assert set(alerts.values()) == set(RECEIVERS)  # page, ticket and info are all used
    for name, severity in alerts.items():
        labels = {"namespace": "production", "model": MODEL, "alertname": name}
        assert routed(COMMITTED, **labels, severity=severity) == RECEIVERS[severity], name
    # another model's alert, or one without a severity, still reaches someone
    assert routed(COMMITTED, model="another-model", severity="page") == RECEIVERS["ticket"]
    assert routed(COMMITTED, model=MODEL, alertname="Unlabelled") == RECEIVERS["ticket"]


@needs_amtool
def test_alerts_are_grouped_by_namespace_model_and_alert_name() -> None:
    config = yaml.safe_load(COMMITTED.read_text())
    assert config["route"]["group_by"] == ["namespace", "model", "alertname"]
    # no route below regroups: every severity keeps the root's grouping
    routes = config["route"]["routes"]
    while routes:
        assert all("group_by" not in r for r in routes)
        routes = [child for r in routes for child in r.get("routes", [])]
    tree = amtool("config", "routes", "show", f"--config.file={COMMITTED}").stdout
    for receiver in RECEIVERS.values():
        assert f"receiver: {receiver}" in tree


def test_drift_alerts_are_inhibited_while_a_new_version_is_announced() -> None:
    config = yaml.safe_load(COMMITTED.read_text())
    (rule,) = config["inhibit_rules"]
    assert f'alertname="{alertmanager.CHANGED}"' in rule["source_matchers"]
    assert alertmanager.CHANGED in every_alert()  # the rules announce a new version
    (target,) = [m for m in rule["target_matchers"] if m.startswith("alertname=~")]
    pattern = re.compile(target.removeprefix('alertname=~"').removesuffix('"'))
    drift = {name for name, _ in rules.ALERTS.values()}
    inhibited = {name for name in every_alert() if pattern.fullmatch(name)}
    assert inhibited == drift  # every drift alert, and no SLO or service alert
    assert rule["equal"] == ["namespace", "model"]  # only the same model in the same namespace
