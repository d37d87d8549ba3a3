"""Profile stage: the reference that served rows are compared with, written at training time.

For every feature of the schema, fixed bins from the training rows and the training fraction per
bin (numeric: ``monitor.bins`` quantile bins plus a missing bin; categorical: one bin per
category plus other and missing); the same for the model's score on the test rows, which is what
a model that has not drifted should see in production. One readable JSON file, a DVC output,
stored with the model in BentoML's store and so in the bento and its image.

Usage: ``python -m pipelines.monitoring.profile --raw RAW --schema SCHEMA --train TRAIN
--predictions PREDICTIONS --out REFERENCE``
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.monitoring.drift import (
    MISSING,
    OTHER,
    Binning,
    fractions,
    merged_edges,
    min_share,
    quantile_edges,
)
from pipelines.params import MonitorParams, load_section
from pipelines.schema import Schema, load_schema, read_raw
from pipelines.stage import PipelineError, path_arguments, run_stage, write_json
from pipelines.stages.featurize import ID

FORMAT = 1
SCORE_COLUMN = "probability"  # of eval/predictions.csv


@dataclass(frozen=True)
class Distribution:
    """One feature's (or the score's) bins and reference fraction per bin."""

    binning: Binning
    fractions: tuple[float, ...]
    rows: int

    def to_json(self) -> dict[str, Any]:
        """The JSON form: kind, edges or categories, bin labels, fractions, rows."""
        document: dict[str, Any] = {"kind": self.binning.kind}
        if self.binning.kind == "numeric":
            document["edges"] = list(self.binning.edges)
        else:
            document["categories"] = list(self.binning.categories)
        document["bins"] = self.binning.labels
        document["fractions"] = [round(f, 8) for f in self.fractions]
        document["rows"] = self.rows
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Distribution:
        """Read the JSON form back."""
        binning = Binning(
            kind=document["kind"],
            edges=tuple(float(e) for e in document.get("edges", ())),
            categories=tuple(document.get("categories", ())),
        )
        values = tuple(float(f) for f in document["fractions"])
        if len(values) != len(binning.labels):
            raise PipelineError(
                f"reference profile: {len(values)} fractions for {len(binning.labels)} bins"
            )
        return cls(binning, values, int(document["rows"]))


@dataclass(frozen=True)
class Profile:
    """The reference profile of a model: every feature's distribution and the score's."""

    features: dict[str, Distribution]
    score: Distribution

    def to_json(self) -> dict[str, Any]:
        """The file's content."""
        return {
            "format": FORMAT,
            "features": {name: d.to_json() for name, d in self.features.items()},
            "score": self.score.to_json(),
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Profile:
        """Read a profile; refuses a format this code does not know."""
        if document.get("format") != FORMAT:
            raise PipelineError(
                f"reference profile format {document.get('format')!r} is not {FORMAT}: "
                "re-run the profile stage (`dvc repro`)"
            )
        features = {
            name: Distribution.from_json(part) for name, part in document["features"].items()
        }
        return cls(features, Distribution.from_json(document["score"]))

    @classmethod
    def read(cls, path: Path) -> Profile:
        """Read a profile file."""
        return cls.from_json(json.loads(Path(path).read_text()))


def binning_of(
    name: str, values: pd.Series, schema: Schema, bins: int, share: float = 0.0
) -> Binning:
    """The bins of feature ``name``: quantile edges of ``values``, or the schema's categories.

    A bin would hold under ``share`` of ``values`` (:func:`min_share`): numeric bins merge
    into a neighbour, rare categories are counted in "(other)".
    """
    feature = schema.features[name]
    if feature.type == "category":
        categories = tuple(feature.categories or ())
        clash = {MISSING, OTHER} & set(categories)
        if clash:
            raise PipelineError(
                f"feature {name!r} has a category named {sorted(clash)[0]!r}, which the "
                "monitoring profile uses for its own bins: rename that category in the data"
            )
        counts = values.value_counts()
        frequent = tuple(c for c in categories if counts.get(c, 0) >= share * len(values))
        return Binning("categorical", categories=frequent)
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    return Binning("numeric", edges=merged_edges(numbers, quantile_edges(numbers, bins), share))


def distribution(binning: Binning, values: Any) -> Distribution:
    """The reference fractions of ``values`` in ``binning``'s bins."""
    counts = binning.counts(values)
    return Distribution(binning, tuple(float(f) for f in fractions(counts)), int(counts.sum()))


def build_profile(
    rows: pd.DataFrame,
    scores: Any,
    schema: Schema,
    bins: int,
    score_bins: int,
    *,
    share: float = 0.0,
) -> Profile:
    """The profile of training ``rows`` (raw feature columns) and test-row ``scores``.

    ``share``: the smallest share of rows a bin may hold (:func:`min_share` of
    ``monitor.min_rows``); the score's quantile bins hold a tenth each and are left as they are.

    Raises:
        PipelineError: No rows, no scores, or a category clashes with the profile's own bins.
    """
    if rows.empty:
        raise PipelineError("the reference profile needs training rows: the train split is empty")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise PipelineError("the reference profile needs the test rows' scores: none were found")
    features = {
        name: distribution(binning_of(name, rows[name], schema, bins, share), rows[name])
        for name in schema.features
    }
    score = Binning("numeric", edges=quantile_edges(scores, score_bins))
    return Profile(features, distribution(score, scores))


def main(argv: list[str] | None = None) -> int:
    """Write the reference profile of the training rows and the test rows' scores."""
    names = ("raw", "schema", "train", "predictions", "out")
    args = path_arguments(__doc__.splitlines()[0], names, argv)
    params = load_section("monitor", MonitorParams)
    schema = load_schema(args.schema)
    train_ids = pd.read_parquet(args.train, columns=[ID])[ID]
    raw = read_raw(args.raw)
    rows = raw[raw[schema.id].isin(train_ids)]
    scores = pd.read_csv(args.predictions, usecols=[SCORE_COLUMN])[SCORE_COLUMN]
    share = min_share(params.min_rows)
    profile = build_profile(rows, scores, schema, params.bins, params.score_bins, share=share)
    write_json(args.out, profile.to_json())
    print(
        f"wrote {args.out}: {len(profile.features)} features from {len(rows)} training rows, "
        f"score bins from {len(scores)} test rows"
    )
    return 0


if __name__ == "__main__":
    run_stage(main)
