"""Pull-request report: gate the workspace's model against the one at a base git ref.

BASE's evaluation outputs come from DVC, as BASE's ``dvc.lock`` records them (the local cache or
the DVC remote; files with ``cache: false`` are in git). When DVC has not got them, BASE is
reproduced in a temporary git worktree. The gate (:mod:`pipelines.review.gate`) decides; the report
is one GitHub comment in markdown (``--comment``) and a machine-readable verdict (``--json``).

Usage: ``python -m pipelines.review.report --base REF --comment reports/pr-comment.md
--json reports/gate.json``. Exit 0: the gate passed; 1: it failed; 2: could not compare (why is
printed in one line and written to the JSON file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipelines.core.features import read_features
from pipelines.core.io import PipelineError, write_atomically, write_json
from pipelines.core.metrics import BinaryPredictions, Predictions
from pipelines.core.value import ValueModel, amounts, curve, value_model
from pipelines.params import (
    CardParams,
    FairnessParams,
    GateParams,
    Paths,
    ValueParams,
    load_optional,
    load_paths,
    load_section,
)
from pipelines.review.gate import Side, compare, fairness_failures, pair
from pipelines.review.holdout import rescore
from pipelines.review.outputs import (
    Base,
    CompareError,
    Outputs,
    Report,
    ValueView,
    base_outputs,
    check_workspace,
    consistent,
    git,
    model_stats,
    progress,
    read_outputs,
)
from pipelines.review.render import render, render_error, verdict_line
from pipelines.schema import Schema, load_schema, read_raw


def params_diff(root: Path, commit: str) -> dict[str, dict[str, Any]]:
    """Params tracked by the stages that differ between ``commit`` and the workspace."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        result = repo.params.diff(a_rev=commit)
    return dict(result.get("diff", {}))


def gate_rules_changed(root: Path, commit: str) -> bool:
    """Whether the workspace's ``gate:`` section differs from BASE's (the PR moves the bar)."""
    text = git(root, "show", f"{commit}:params.yaml")
    base = (yaml.safe_load(text) or {}).get("gate") if text else None
    return base is not None and base != yaml.safe_load((root / "params.yaml").read_text())["gate"]


def data_md5(root: Path, commit: str, paths: Paths) -> tuple[str | None, str | None]:
    """The data hash in the ``.dvc`` file of ``paths.data`` at ``commit`` and in the workspace."""
    name = paths.data_dvc.as_posix()

    def md5(text: str | None) -> str | None:
        outs = (yaml.safe_load(text) or {}).get("outs") if text else None
        return str(outs[0].get("md5")) if outs else None

    workspace = root / name
    return md5(git(root, "show", f"{commit}:{name}")), md5(
        workspace.read_text() if workspace.exists() else None
    )


@dataclass(frozen=True)
class Valuer:
    """The PR's value model with the raw table's amounts, by id (None: no amount column)."""

    model: ValueModel
    raw: pd.DataFrame | None

    @classmethod
    def of(cls, root: Path, paths: Paths, pr: Outputs) -> Valuer | None:
        """The workspace's value model for the PR's task, or None without one."""
        section = load_optional("value", ValueParams, root / "params.yaml")
        if section is None:
            return None
        value = value_model(section, pr.task, pr.target[1])
        raw = None
        if value.amount is not None:
            raw = read_raw(root / paths.raw).set_index(load_schema(root / paths.schema_).id)
        return cls(value, raw)

    def amount(self, predictions: Predictions) -> np.ndarray | None:
        """Each row's amount, or None."""
        return None if self.raw is None else amounts(self.model, self.raw, predictions.ids)

    def gains(self, predictions: Predictions) -> np.ndarray:
        """Each row's gain at the decisions of the predictions (:data:`Gains`)."""
        decided = predictions.predicted  # type: ignore[attr-defined]
        return self.model.gains(predictions.label, decided, self.amount(predictions))

    def view(self, sides: tuple[Side | None, Side], pr: Outputs) -> ValueView:
        """The comment's value section: curves, thresholds, the best trivial policy."""
        curves: dict[str, list[dict[str, float]]] = {}
        thresholds: dict[str, float] = {}
        for name, side in zip(("base", "pr"), sides, strict=True):
            if isinstance(side, Side) and isinstance(side.predictions, BinaryPredictions):
                p = side.predictions
                curves[name] = curve(self.model, p.label, p.probability, self.amount(p))
                thresholds[name] = float(side.metrics.get("threshold") or 0.5)
        rows = sides[1].predictions
        meta_file = pr.model / "meta.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        constant = meta.get("decision", {}).get("constant")
        trivial = self.model.trivial(rows.label, self.amount(rows), constant)
        best = max(trivial, key=lambda k: float(trivial[k].mean()))
        worth = self.model.per_1000(trivial[best])
        return ValueView(self.model.currency, self.model.unit, curves, thresholds, (best, worth))


def build(root: Path, ref: str, into: Path) -> Report:
    """Compare the workspace's model with BASE's and gather what the comment shows."""
    paths = load_paths(root / "params.yaml")
    params = load_section("gate", GateParams, root / "params.yaml")
    check_workspace(root, paths)
    pr = read_outputs(root, paths)
    base = base_outputs(root, ref, paths, into)
    names = list(params.metrics)
    consistent(pr, names, "the PR")
    if base.outputs is not None:
        consistent(base.outputs, names, "BASE")
    valuer = Valuer.of(root, paths, pr)
    try:
        sides, holdout = same_holdout(root, paths, base, pr, into)
        progress(f"bootstrapping {params.resamples} resamples")
        result = compare(
            *sides,
            params,
            new_holdout=holdout is not None and "rows" in holdout,
            gains_of=None if valuer is None else valuer.gains,
        )
    except ValueError as error:
        raise CompareError(f"cannot read the predictions: {error}") from None
    if holdout is not None:
        result = dataclasses.replace(result, notes=[holdout["note"], *result.notes])
    fairness = load_optional("fairness", FairnessParams, root / "params.yaml")
    unfair = [] if fairness is None else fairness_failures(pr.fairness, fairness)
    if unfair:
        result = dataclasses.replace(result, passed=False, failures=[*result.failures, *unfair])
    validation_file = root / paths.validation
    return Report(
        base=base,
        gate=result,
        params=params,
        pr=pr,
        params_diff=params_diff(root, base.commit),
        gate_rules_changed=gate_rules_changed(root, base.commit),
        data_md5=data_md5(root, base.commit, paths),
        validation=json.loads(validation_file.read_text()) if validation_file.exists() else None,
        model_stats=model_stats(base.outputs, pr, root / paths.test),
        holdout=holdout,
        card_metrics=load_section("card", CardParams, root / "params.yaml").segment_metrics,
        value=None if valuer is None else valuer.view(sides, pr),
        fairness=fairness,
    )


def same_holdout(
    root: Path, paths: Paths, base: Base, pr: Outputs, into: Path
) -> tuple[tuple[Side | None, Side], dict[str, Any] | None]:
    """The sides to gate: on the same holdout when the data changed and BASE's model can say.

    When BASE's and the PR's test rows differ, BASE's model scores the PR's test rows
    (:mod:`pipelines.review.holdout`). Returns the two sides and what was done: None when the
    rows were the same already (or BASE has no model); ``rows``, ``excluded`` and ``note`` for a
    new holdout; ``fallback`` (why not) and ``note`` for the unpaired fallback.
    """
    if base.outputs is None:
        return (None, pr.side()), None
    if pair(base.outputs.side().predictions, pr.side().predictions)[0] is not None:
        return (base.outputs.side(), pr.side()), None
    schema_text = git(root, "show", f"{base.commit}:{paths.schema_.as_posix()}")
    train = into / paths.train
    if schema_text is None or not train.exists():
        missing = paths.schema_ if schema_text is None else paths.train
        holdout, why = None, f"BASE's {missing} could not be read"
    else:
        progress("the test rows differ: scoring BASE's model on the PR's test rows")
        holdout, why = rescore(
            read_raw(root / paths.raw),
            pr.read(),
            base_schema=Schema.model_validate(yaml.safe_load(schema_text)),
            pr_schema=load_schema(root / paths.schema_),
            base_train_ids=read_features(train)[2],
            base_model=base.outputs.model,
            thresholds=(
                float(base.outputs.metrics.get("threshold", 0.5)),
                float(pr.metrics.get("threshold", 0.5)),
            ),
        )
    if holdout is None:
        note = f"BASE's model cannot score the PR's test rows: {why}; the bootstrap is unpaired."
        return (base.outputs.side(), pr.side()), {"fallback": why, "note": note}
    sides = (Side(holdout.base, holdout.base_metrics), Side(holdout.pr, holdout.pr_metrics))
    return sides, {"rows": len(holdout.pr), "excluded": holdout.excluded, "note": holdout.note()}


def gate_document(report: Report) -> dict[str, Any]:
    """The machine-readable verdict."""
    gate = report.gate

    def finite(value: float | None) -> float | None:
        return round(value, 6) if value is not None and math.isfinite(value) else None

    return {
        "verdict": "pass" if gate.passed else "fail",
        "exit_code": 0 if gate.passed else 1,
        "reason": None if gate.passed else "; ".join(gate.failures),
        "base": {
            "ref": report.base.ref,
            "commit": report.base.commit,
            "source": report.base.source,
        },
        "mode": gate.mode,
        "rows": {"pr": gate.rows[0], "base": gate.rows[1]},
        "holdout": report.holdout,
        "failures": gate.failures,
        "notes": gate.notes,
        "bootstrap": {
            "resamples": report.params.resamples,
            "seed": report.params.seed,
            "confidence": report.params.confidence,
        },
        "metrics": {
            m.name: {
                "better": m.rule.better,
                "base": finite(m.base),
                "pr": finite(m.pr),
                "delta": finite(m.delta),
                "low": finite(m.low),
                "high": finite(m.high),
                "tolerance": m.rule.tolerance,
                "floor": m.rule.floor,
                "ceiling": m.rule.ceiling,
                "bound_broken": m.bound_broken,
                "verdict": m.verdict,
            }
            for m in gate.metrics
        },
        "params_changed": report.params_diff,
        "gate_rules_changed": report.gate_rules_changed,
    }


def gate_summary(document: dict[str, Any], limit: int = 300) -> str:
    """One line of a ``gate.json`` (:func:`gate_document`, or the error document of :func:`main`).

    What release.yml records on the image as its ``gate_verdict`` label, and ``make trace`` prints.
    """
    base = document.get("base") or {}
    against, commit = str(base.get("ref") or "?"), str(base.get("commit") or "")
    if commit and not commit.startswith(against):  # a branch name, not (part of) the commit
        against += f" ({commit[:12]})"
    line = f"{document.get('verdict', 'unknown')} against {against}"
    if document.get("verdict") == "pass":
        verdicts = [m.get("verdict") for m in (document.get("metrics") or {}).values()]
        counts = [f"{verdicts.count(v)} {v}" for v in dict.fromkeys(verdicts)]
        line += f", {document.get('mode')}: " + ", ".join(counts)
    elif document.get("reason"):
        line += f": {document['reason']}"
    line = " ".join(line.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    """Compare, write the comment and the verdict, and exit 0 (pass), 1 (fail) or 2 (error)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git ref to compare with (default: main)")
    parser.add_argument("--comment", type=Path, required=True, metavar="PATH")
    parser.add_argument("--json", type=Path, required=True, metavar="PATH")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="report-") as scratch:
        try:
            report = build(Path.cwd(), args.base, Path(scratch) / "base")
        except (PipelineError, OSError, ValueError) as error:
            reason = " ".join(str(error).split())
            comment = render_error(args.base, reason)
            write_atomically(args.comment, lambda p: p.write_text(comment))
            document = {
                "verdict": "error",
                "exit_code": 2,
                "reason": reason,
                "base": {"ref": args.base},
            }
            write_json(args.json, document)
            print(f"error: could not compare with {args.base}: {reason}", file=sys.stderr)
            return 2
    comment = render(report)
    write_atomically(args.comment, lambda p: p.write_text(comment))
    write_json(args.json, gate_document(report))
    print(verdict_line(report))
    print(f"wrote {args.comment} and {args.json}")
    return 0 if report.gate.passed else 1


if __name__ == "__main__":
    sys.exit(main())
