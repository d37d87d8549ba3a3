"""The shadow report: the challenger against the model on the same live requests.

Usage: ``python -m pipelines.monitoring.challenger [SHADOW] [--labels CSV]`` (``make
shadow-report [SHADOW=<folder>] [LABELS=<csv>]``), where SHADOW is shadow scoring's log
(``paths.shadow``: its ``champion/`` and ``challenger/`` request logs, written by
:mod:`pipelines.serving.shadow`). Writes ``reports/shadow.md`` and ``reports/shadow.json``.

Without labels it says how often the two agree (the same decision; a regression's challenger
inside the model's interval), how far their outputs are apart and how differently their scores
are spread (PSI over the reference profile's score bins, the model as the reference). With late
labels (a CSV of ``id,label``, as ``make monitor`` takes them) it adds the paired difference,
challenger minus model, of every gated metric of the task and, when params state a value model,
of the value per 1,000 rows: the same requests drawn for both in each bootstrap resample
(``gate.resamples``, ``gate.confidence``), so what the requests have in common cancels out.

Exit 0 when it compared, 2 when it could not (no log, rows of another schema, bad labels).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.drift import Binning, psi, smoothed
from pipelines.core.formatting import number
from pipelines.core.io import PipelineError, write_atomically, write_json
from pipelines.core.metrics import (
    METRICS,
    VALUE,
    BinaryPredictions,
    MulticlassPredictions,
    Predictions,
    RegressionPredictions,
    Task,
    class_positions,
    interval,
)
from pipelines.core.model import monitored_score
from pipelines.core.profile import Profile
from pipelines.core.value import value_model
from pipelines.core.weighted import resample_blocks
from pipelines.monitoring.outcomes import served_amount
from pipelines.monitoring.quality import gated
from pipelines.monitoring.served import (
    LOG_ID,
    MonitorError,
    Served,
    files_of,
    join_labels,
    read_labels,
    read_served,
)
from pipelines.params import GateParams, ValueParams, load_optional, load_paths, load_section
from pipelines.schema import Schema, Target, load_schema
from pipelines.serving.shadow import CHALLENGER, CHAMPION

DECISION = "label"  # the request log's field of a classifier's decided class


@dataclass(frozen=True)
class Side:
    """One model's answers to the shared requests, in the same order as the other side's."""

    version: str
    output: np.ndarray  # core.model.predict's: a probability, class probabilities, a value
    decided: np.ndarray  # binary 0/1, a class position, or a regression's prediction
    interval: np.ndarray  # a regression's (low, high) per row; NaN for a classifier


@dataclass(frozen=True)
class Difference:
    """Challenger minus model of one measure on the labelled requests, and its interval."""

    name: str
    better: str
    champion: float
    challenger: float
    low: float
    high: float

    @property
    def verdict(self) -> str:
        """better, worse or no clear difference, by where the interval lies."""
        if not (np.isfinite(self.low) and np.isfinite(self.high)):
            return "undefined"
        above, below = self.low > 0, self.high < 0  # the whole interval on one side of 0
        if above or below:
            return "better" if above == (self.better == "higher") else "worse"
        return "no clear difference"


@dataclass(frozen=True)
class Comparison:
    """What the shadow log says about the challenger against the model."""

    task: Task
    rows: int
    unmatched: int  # logged by one side only (a worker stopped between the two lines)
    champion: str
    challenger: str
    agreement: float
    mean_abs_difference: float
    score_psi: float
    labelled: int = 0
    confidence: float = 0.0
    differences: list[Difference] = field(default_factory=list)
    value_skipped: str | None = None

    def document(self) -> dict[str, Any]:
        """``reports/shadow.json``."""
        return {
            "task": self.task,
            "rows": self.rows,
            "unmatched": self.unmatched,
            "champion_version": self.champion,
            "challenger_version": self.challenger,
            "agreement": self.agreement,
            "mean_abs_difference": self.mean_abs_difference,
            "score_psi": self.score_psi,
            "labelled": self.labelled,
            "confidence": self.confidence,
            "differences": {
                d.name: {
                    "champion": _finite(d.champion),
                    "challenger": _finite(d.challenger),
                    "difference": _finite(d.challenger - d.champion),
                    "low": _finite(d.low),
                    "high": _finite(d.high),
                    "better": d.better,
                    "verdict": d.verdict,
                }
                for d in self.differences
            },
            "value_skipped": self.value_skipped,
        }


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _decisions(folder: Path, target: Target) -> np.ndarray:
    """The decided classes the log's lines carry, in :func:`read_served`'s row order."""
    import pyarrow as pa
    import pyarrow.json as pj

    explicit = pa.schema([(LOG_ID, pa.string()), (DECISION, pa.string())])
    options = pj.ParseOptions(explicit_schema=explicit, unexpected_field_behavior="ignore")
    labels = [
        pj.read_json(file, parse_options=options).column(DECISION).to_pandas()
        for file in files_of(folder)
        if file.stat().st_size
    ]
    decided = pd.concat(labels, ignore_index=True) if labels else pd.Series([], dtype=object)
    if target.task == "binary":
        return (decided == str(target.positive)).to_numpy(dtype=np.int8)
    return class_positions(decided, [str(c) for c in target.labels])


def _version(folder: Path) -> str:
    with files_of(folder)[0].open() as lines:
        return str(json.loads(next(lines)).get("model_version", "?"))


def read_side(folder: Path, schema: Schema) -> tuple[Served, Side]:
    """One side's log: its rows and answers (:func:`read_served`) and its decisions."""
    served = read_served(folder, schema)
    task = schema.target.task
    decided = served.output if task == "regression" else _decisions(folder, schema.target)
    bounds = served.interval if served.interval is not None else np.full((len(served), 2), np.nan)
    return served, Side(_version(folder), served.output, decided, bounds)


def paired(served: Served, other: Served) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the requests both logs hold, in the first's order, in each log."""
    first = pd.Index(served.ids, dtype=object)
    second = pd.Index(other.ids, dtype=object)
    if first.has_duplicates or second.has_duplicates:
        raise MonitorError(
            "the shadow log holds an id twice: give each request its own X-Request-ID"
        )
    where = second.get_indexer(first)
    mine = np.flatnonzero(where >= 0)
    return mine, where[mine]


def _take(side: Side, rows: np.ndarray) -> Side:
    return Side(side.version, side.output[rows], side.decided[rows], side.interval[rows])


def predictions(target: Target, side: Side, label: np.ndarray) -> Predictions:
    """One side's labelled answers as the task's predictions, at the decisions it served."""
    ids = np.arange(len(label))
    if target.task == "binary":
        return BinaryPredictions(ids, label, side.output, side.decided.astype(np.int8))
    if target.task == "multiclass":
        classes = tuple(target.labels)
        return MulticlassPredictions(ids, label, side.output, side.decided, classes)
    low, high = side.interval[:, 0], side.interval[:, 1]
    return RegressionPredictions(ids, label, side.output, low, high)


def metric_differences(
    target: Target, sides: tuple[Side, Side], label: np.ndarray, names: list[str], gate: GateParams
) -> list[Difference]:
    """Challenger minus model of each metric on the labelled requests, paired bootstrap."""
    champion, challenger = (predictions(target, side, label) for side in sides)
    rows = (champion.rows(), challenger.rows())
    registry = METRICS[target.task]
    drawn: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for counts in resample_blocks(len(label), gate.resamples, gate.seed):
        for name in names:
            weighted = registry[name].weighted
            drawn[name].append(
                weighted(rows[1], counts[:, rows[1].order])
                - weighted(rows[0], counts[:, rows[0].order])
            )
    return [
        Difference(
            name,
            registry[name].better,
            registry[name].point(champion),
            registry[name].point(challenger),
            *interval(np.concatenate(drawn[name]), gate.confidence),
        )
        for name in names
    ]


def value_difference(gains: tuple[np.ndarray, np.ndarray], gate: GateParams) -> Difference:
    """Challenger minus model of the value per 1,000 requests, paired bootstrap (same draws)."""
    samples = [
        counts.dot(gains[1] - gains[0]) / counts.sum(axis=1) * 1000.0
        for counts in resample_blocks(len(gains[0]), gate.resamples, gate.seed)
    ]
    champion, challenger = (float(np.mean(g) * 1000.0) for g in gains)
    low, high = interval(np.concatenate(samples), gate.confidence)
    return Difference(VALUE, "higher", champion, challenger, low, high)


def agreement(task: Task, sides: tuple[Side, Side]) -> float:
    """Share of requests with the same decision; a regression's: challenger inside the interval."""
    champion, challenger = sides
    if task == "regression":
        low, high = champion.interval[:, 0], champion.interval[:, 1]
        return float(np.mean((challenger.output >= low) & (challenger.output <= high)))
    return float(np.mean(champion.decided == challenger.decided))


def score_psi(task: Task, sides: tuple[Side, Side], binning: Binning) -> float:
    """PSI of the challenger's monitored scores against the model's, in the profile's bins."""
    counts = [binning.counts(monitored_score(side.output, task)) for side in sides]
    held = counts[0] > 0
    return psi(smoothed(counts[1], held), smoothed(counts[0], held))


def logs_of(folder: Path) -> tuple[Path, Path]:
    """The model's and the challenger's logs in a shadow folder.

    Raises:
        MonitorError: One of them is not there.
    """
    champion, challenger = (Path(folder) / name for name in (CHAMPION, CHALLENGER))
    for log in (champion, challenger):
        if not log.is_dir():
            raise MonitorError(
                f"{log} does not exist: shadow scoring writes it (serve with MODEL_SHADOW set; "
                "docs/serving.md)"
            )
    return champion, challenger


@dataclass(frozen=True)
class Settings:
    """What the comparison reads besides the logs: the model's schema, score bins and params."""

    schema: Schema
    score_bins: Binning  # the reference profile's bins of the monitored score
    gate: GateParams
    value: ValueParams | None

    @classmethod
    def of(cls, params: Path) -> Settings:
        """The current model's, from ``params.yaml``."""
        paths = load_paths(params)
        return cls(
            load_schema(paths.schema_),
            Profile.read(paths.reference).score.binning,
            load_section("gate", GateParams, params),
            load_optional("value", ValueParams, params),
        )


def compare(folder: Path, labels_file: Path | None, settings: Settings) -> Comparison:
    """The comparison of the challenger with the model in the shadow log ``folder``.

    Raises:
        MonitorError: A side's log is missing or unreadable, no request is in both, or bad
            labels (:func:`read_labels`), or none of them names a shadowed request.
    """
    schema, gate = settings.schema, settings.gate
    task = schema.target.task
    logs = logs_of(folder)
    (served, champion), (other, challenger) = (read_side(log, schema) for log in logs)
    mine, theirs = paired(served, other)
    if not len(mine):
        raise MonitorError(f"{folder}: no request is in both logs")
    sides = (_take(champion, mine), _take(challenger, theirs))
    ids = served.ids[mine]
    distance = np.abs(sides[1].output - sides[0].output)
    comparison = Comparison(
        task=task,
        rows=len(mine),
        unmatched=len(served) + len(other) - 2 * len(mine),
        champion=champion.version,
        challenger=challenger.version,
        agreement=agreement(task, sides),
        mean_abs_difference=float(
            distance.sum(axis=1).mean() / 2 if distance.ndim == 2 else distance.mean()
        ),
        score_psi=score_psi(task, sides, settings.score_bins),
    )
    if labels_file is None:
        return comparison
    matched, label = join_labels(ids, read_labels(labels_file, schema))
    if not len(matched):
        raise MonitorError(f"LABELS {labels_file}: no label names a shadowed request")
    labelled = (_take(sides[0], matched), _take(sides[1], matched))
    names = list(gated(task, gate.metrics))
    differences = metric_differences(schema.target, labelled, label, names, gate)
    gains = _gains(settings, served.frame, rows=mine[matched], sides=labelled, label=label)
    if isinstance(gains, tuple):
        differences.append(value_difference(gains, gate))
    return replace(
        comparison,
        labelled=len(matched),
        confidence=gate.confidence,
        differences=differences,
        value_skipped=gains if isinstance(gains, str) else None,
    )


def _gains(
    settings: Settings,
    frame: pd.DataFrame,
    *,
    rows: np.ndarray,
    sides: tuple[Side, Side],
    label: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | str:
    """Each labelled request's gain under each side's decisions, or why there is no value.

    ``rows``: the labelled requests' positions in ``frame`` (the served rows, for an amount).
    """
    stated = settings.value
    if stated is None:
        return "params state no value model (value:)"
    target = settings.schema.target
    try:
        model = value_model(stated, target.task, tuple(target.labels))
    except PipelineError as error:
        return " ".join(str(error).split())
    amount = None
    if model.amount is not None:
        found = served_amount(model.amount, frame, rows)
        if isinstance(found, str):
            return found
        amount = found
    champion, challenger = (model.gains(label, side.decided, amount) for side in sides)
    return champion, challenger


def _shown(name: str, value: float, signed: bool = False) -> str:
    """A metric with 4 decimals, a value per 1,000 in whole units."""
    if name == VALUE and np.isfinite(value):
        return f"{value:+,.0f}" if signed else f"{value:,.0f}"
    return number(value, 4, signed=signed)


def render(comparison: Comparison, folder: Path) -> str:
    """``reports/shadow.md``."""
    c = comparison
    agree = (
        "challenger's prediction inside the model's interval"
        if c.task == "regression"
        else "the same decision"
    )
    lines = [
        "## Shadow scoring: the challenger against the model",
        "",
        f"Model `{c.champion}`, challenger `{c.challenger}`: {c.rows:,} requests scored by both "
        f"(`{folder}`)" + (f"; {c.unmatched:,} logged by one side only." if c.unmatched else "."),
        "",
        "| | |",
        "|---|---|",
        f"| agreement ({agree}) | {c.agreement:.1%} |",
        f"| mean absolute difference of the outputs | {number(c.mean_abs_difference, 4)} |",
        f"| PSI of the challenger's scores against the model's | {c.score_psi:.3f} |",
        "",
    ]
    if not c.labelled:
        lines.append("No late labels given (`LABELS=<csv of id,label>`): no metric is compared.")
        return "\n".join(lines) + "\n"
    lines += [
        f"On the {c.labelled:,} requests with a late label, challenger minus model, "
        f"{c.confidence:.0%} paired bootstrap interval:",
        "",
        "| metric | model | challenger | difference | interval | |",
        "|---|---|---|---|---|---|",
    ]
    for d in c.differences:
        lines.append(
            f"| {d.name} | {_shown(d.name, d.champion)} | {_shown(d.name, d.challenger)} | "
            f"{_shown(d.name, d.challenger - d.champion, signed=True)} | "
            f"[{_shown(d.name, d.low, signed=True)}, {_shown(d.name, d.high, signed=True)}] | "
            f"{d.verdict} |"
        )
    if c.value_skipped:
        lines += ["", f"Value not compared: {c.value_skipped}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Compare, write both reports; exit 0, or 2 when the logs cannot be compared."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shadow", type=Path, nargs="?", help="default: paths.shadow")
    parser.add_argument("--labels", type=Path, help="late labels: CSV with the columns id,label")
    parser.add_argument("--markdown", type=Path, default=Path("reports/shadow.md"))
    parser.add_argument("--json", type=Path, default=Path("reports/shadow.json"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)
    folder = args.shadow or load_paths(args.params).shadow
    try:
        logs_of(folder)  # first: no logs is the likeliest reason, whatever else is missing
        comparison = compare(folder, args.labels, Settings.of(args.params))
    except (PipelineError, OSError) as error:
        reason = " ".join(str(error).split())
        write_json(args.json, {"exit_code": 2, "reason": reason})
        print(f"error: could not compare: {reason}", file=sys.stderr)
        return 2
    text = render(comparison, folder)
    write_atomically(args.markdown, lambda p: p.write_text(text))
    write_json(args.json, comparison.document())
    print(text)
    print(f"wrote {args.markdown} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
