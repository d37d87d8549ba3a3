"""The reference profile: per feature and for the score, fixed bins and the training share of each.

Numeric features: ``monitor.bins`` quantile bins plus a missing bin; categorical: one bin per
category plus other and missing. A multiclass model's profile also holds the share of test rows
predicted as each class (the schema's classes, in order). Written by the profile stage
(:mod:`pipelines.stages.profile`), read by the service's drift counters and by ``make monitor``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.core.drift import (
    MISSING,
    OTHER,
    Binning,
    fractions,
    merged_edges,
    quantile_edges,
)
from pipelines.core.io import PipelineError
from pipelines.schema import Schema

FORMAT = 1
PREDICTED = "predicted_class"  # the profile file's key of a multiclass model's class shares


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
    """The reference profile of a model: every feature's distribution and the score's.

    ``predicted``: a multiclass model's predicted-class shares (:func:`class_binning`); None
    for the other tasks, whose files have no such key.
    """

    features: dict[str, Distribution]
    score: Distribution
    predicted: Distribution | None = None

    def to_json(self) -> dict[str, Any]:
        """The file's content."""
        document: dict[str, Any] = {
            "format": FORMAT,
            "features": {name: d.to_json() for name, d in self.features.items()},
            "score": self.score.to_json(),
        }
        if self.predicted is not None:
            document[PREDICTED] = self.predicted.to_json()
        return document

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
        predicted = document.get(PREDICTED)
        return cls(
            features,
            Distribution.from_json(document["score"]),
            Distribution.from_json(predicted) if predicted is not None else None,
        )

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


def class_binning(classes: Sequence[Any]) -> Binning:
    """The bins of a multiclass model's predicted class: one per class, named as text."""
    return Binning("categorical", categories=tuple(str(c) for c in classes))


def class_names(positions: Any, classes: Sequence[Any]) -> np.ndarray:
    """Class positions (0 for ``classes[0]``) as the bin names of :func:`class_binning`."""
    return np.asarray([str(c) for c in classes], dtype=object)[np.asarray(positions, dtype=int)]


def build_profile(
    rows: pd.DataFrame,
    scores: Any,
    schema: Schema,
    bins: int,
    score_bins: int,
    *,
    share: float = 0.0,
    score_share: float = 0.0,
    predicted: Any = None,
) -> Profile:
    """The profile of training ``rows`` (raw feature columns) and test-row ``scores``.

    ``share``: the smallest share of rows a feature's bin may hold; ``score_share``: the
    smallest share of test rows a score bin may hold (:func:`min_share` of ``monitor.min_rows``
    and the training or test rows: few test rows merge the score's quantile bins).
    ``predicted``: a multiclass model's predicted class of each test row, as positions in the
    schema's class order (:func:`pipelines.core.model.monitored_class`); every class keeps its
    bin, however rare (a class the model stops or starts predicting is the drift to see).

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
    edges = merged_edges(scores, quantile_edges(scores, score_bins), score_share)
    score = Binning("numeric", edges=edges)
    classes = schema.target.labels
    shares = None
    if predicted is not None:
        shares = distribution(class_binning(classes), class_names(predicted, classes))
    return Profile(features, distribution(score, scores), shares)
