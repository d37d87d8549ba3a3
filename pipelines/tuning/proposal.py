"""Whether ``make tune``'s result is worth a pull request, for the tuning workflow (tune.yml).

A pull request is proposed when the search wrote better params into params.yaml
(``reports/tune.json``: ``improved`` and ``written``); otherwise nothing is, and a notice says
why. The pull request goes on the fixed branch ``tune/params``, so that a second run updates the
open one instead of opening another; its body is ``reports/tune.md``.

Usage: ``python -m pipelines.tuning.proposal reports/tune.json [--github-output FILE]`` prints
the step outputs ``propose=true|false``, ``branch``, ``title``, ``commit``, ``paths`` (what the
pull request commits: the params file) and ``reason``, or appends them to FILE (the step's
``$GITHUB_OUTPUT``) and prints a line for people, a ``::notice::`` when nothing is proposed. It
exits 1 when the report cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.core.formatting import number
from pipelines.core.metrics import label_of
from pipelines.params import DEFAULT_PARAMS, RegisterParams, load_section

BRANCH = "tune/params"


def outputs(report: Mapping[str, Any], *, model: str, params: Path) -> dict[str, str]:
    """The step outputs for ``reports/tune.json``."""
    propose = bool(report.get("improved")) and bool(report.get("written"))
    metric, trials = label_of(str(report["metric"])), int(report["trials"])
    scores = f"{number(report.get('baseline'), 4)} → {number(report.get('best'), 4)}"
    if propose:
        reason = (
            f"trial {report.get('best_trial')} of {trials} beats the current params: "
            f"cross-validated {metric} {scores}"
        )
    elif report.get("improved"):
        reason = (
            f"trial {report.get('best_trial')} of {trials} beats the current params, but "
            f"{params} was not written: no pull request"
        )
    else:
        reason = (
            f"no trial of {trials} beats the current params (cross-validated {metric} "
            f"{number(report.get('baseline'), 4)}): {params} is unchanged, no pull request"
        )
    return {
        "propose": "true" if propose else "false",
        "branch": BRANCH,
        "title": f"Tune {model}: cross-validated {metric} {scores} ({trials} trials)",
        "commit": f"Tune {model}'s train params: {metric} {scores} in CV (make tune, {trials} "
        "trials)",
        "paths": str(params),
        "reason": reason,
    }


def main(argv: list[str] | None = None) -> int:
    """Print or write the step outputs; exit 0 whatever the decision, 1 without a report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="reports/tune.json of make tune")
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS)
    parser.add_argument("--github-output", type=Path, help="append the outputs here")
    args = parser.parse_args(argv)

    try:
        report = json.loads(args.report.read_text())
    except (OSError, ValueError) as error:
        print(f"::error::cannot read {args.report} ({error}): run `make tune` first")
        return 1
    model = load_section("register", RegisterParams, args.params).model_name
    found = outputs(report, model=model, params=args.params)
    lines = "".join(f"{key}={value}\n" for key, value in found.items())
    if args.github_output is None:
        print(lines, end="")
        return 0
    with args.github_output.open("a") as handle:
        handle.write(lines)
    if found["propose"] == "true":
        print(f"proposing on {found['branch']}: {found['reason']}")
    else:
        print(f"::notice::{found['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
