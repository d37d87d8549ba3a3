"""Whether ``make monitor``'s report calls for retraining, for the scheduled monitor workflow.

Retrain when the served rows drift (the report's exit code 1, features or the monitored score),
or when their quality dropped: a realised metric of the model's task (late labels) breaks its
gate floor or ceiling (a metric the labelled rows leave undefined, NaN, counts as broken, as in
the gate), or a gated metric estimated from the outputs moved the wrong way from the same
estimate on the test rows by more than its gate tolerance. Only the tasks whose outputs estimate
something have estimates (a binary model's expected confusion matrix, a multiclass model's
expected accuracy and log loss): a regression's quality drops show only with labels. A report
without a verdict (too few rows, or an error) never calls for it.

A realised fairness gap wholly above its bound (``fairness.breaches`` of the report) is not a
reason to retrain (more rows of the same kind do not narrow it): it is printed as a
``::warning::`` annotation and as the step output ``fairness=...``, for the team to act on.

Usage: ``python -m pipelines.monitoring.retrain reports/monitor.json`` prints GitHub step
outputs: ``retrain=true|false``, ``reason=...``, ``branch=retrain/<model name>``, ``model=...``,
``data=<the .dvc file of the data>`` and ``fairness=<breaches, or empty>``. A quiet window
(fewer served rows than ``monitor.min_rows``: no verdict) is no failure: it prints a
``::notice::`` saying so and ``retrain=false``, and exits 0, so quiet hours leave the scheduled
job green. It exits 1 when the rows could not be compared (unreadable rows, a missing column, no
model), naming why, so that the scheduled job fails visibly. Drift and quality drops open the
retraining pull request.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.params import GateParams, MetricRule, RegisterParams, load_paths, load_section

BRANCH_PREFIX = "retrain/"
QUIET = "no verdict"  # make monitor's verdict for a window of fewer than min_rows rows


def reasons(report: Mapping[str, Any], rules: Mapping[str, MetricRule]) -> list[str]:
    """Why the report calls for retraining; empty when it does not.

    Args:
        report: ``reports/monitor.json``.
        rules: The gate's metric rules (``gate.metrics`` of params.yaml).
    """
    if report.get("exit_code") not in (0, 1):
        return []
    found = []
    if report["exit_code"] == 1:
        drifting = [
            *report.get("drifting", []),
            *(["the score"] if report.get("score_drift") else []),
            *(["the predicted class"] if report.get("predicted_class_drift") else []),
        ]
        found.append(f"drift in {', '.join(drifting)}")
    quality = report.get("quality") or {}
    realised = quality.get("realised") or {}
    for name, bound in (realised.get("bounds") or {}).items():
        if bound.get("broken"):
            side = "below its floor" if bound["better"] == "higher" else "above its ceiling"
            if bound.get("value") is None:  # NaN in the report: undefined on the labelled rows
                found.append(
                    f"realised {name} is undefined on the labelled rows (its gate bound "
                    f"{bound['bound']} cannot be checked)"
                )
            else:
                found.append(f"realised {name} {bound['value']} is {side} {bound['bound']}")
    served, test = quality.get("estimated") or {}, quality.get("test_estimated") or {}
    for name, rule in rules.items():
        now, before = served.get(name), test.get(name)
        if not isinstance(now, int | float) or not isinstance(before, int | float):
            continue
        drop = (before - now) * rule.sign
        if drop > rule.tolerance:
            found.append(
                f"estimated {name} moved from {before:.4f} on the test rows to {now:.4f} on the "
                f"served rows (more than the gate's tolerance {rule.tolerance})"
            )
    return found


def fairness_breaches(report: Mapping[str, Any]) -> list[str]:
    """The realised fairness gaps above their bounds that the report lists (none without)."""
    fairness = report.get("fairness") or {}
    return [str(b) for b in fairness.get("breaches") or []]


def main(argv: list[str] | None = None) -> int:
    """Print the step outputs; exit 0 whatever the decision or on a quiet window, 1 on an error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="reports/monitor.json of make monitor")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)

    try:
        report = json.loads(args.report.read_text())
    except (OSError, ValueError) as error:
        print(
            f"error: cannot read {args.report} ({error}): run `make monitor` first", file=sys.stderr
        )
        return 1
    quiet = report.get("exit_code") == 2 and report.get("verdict") == QUIET
    if report.get("exit_code") not in (0, 1) and not quiet:
        reason = report.get("reason") or "no verdict"
        print(f"::error::make monitor gave no verdict: {reason}", file=sys.stderr)
        return 1
    rules = load_section("gate", GateParams, args.params).metrics
    model = load_section("register", RegisterParams, args.params).model_name
    found = reasons(report, rules)
    verdict = report.get("verdict", "no verdict")
    if quiet:
        # stderr: stdout is the step's GITHUB_OUTPUT, which takes key=value lines only
        verdict = report.get("reason") or "too few served rows"
        print(f"::notice::a quiet window, no verdict: {verdict}", file=sys.stderr)
    print(f"retrain={'true' if found else 'false'}")
    print(f"reason={'; '.join(found) or verdict}")
    print(f"branch={BRANCH_PREFIX}{model}")
    print(f"model={model}")
    print(f"data={load_paths(args.params).data_dvc}")
    breaches = fairness_breaches(report)
    for breach in breaches:
        print(f"::warning::fairness: {breach}", file=sys.stderr)
    print(f"fairness={'; '.join(breaches)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
