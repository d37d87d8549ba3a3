"""Scoring a request: rows encoded straight into numpy, scored by treelite or XGBoost, explained.

Every task goes the same way: a binary classifier, a multiclass one and a regression differ in
the model's output (:meth:`Scorer.output`), in which margin an explanation adds up to and in the
response built from them (:class:`ServedModel`). The encoder gives the same columns as
:func:`pipelines.core.features.encode`, in the model's feature order, without a DataFrame per
request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from pydantic import BaseModel

from pipelines.core.features import feature_names
from pipelines.core.io import PipelineError
from pipelines.core.linear import Linear
from pipelines.core.metrics import Task, decided_classes
from pipelines.core.model import LoadedModel, load_model, predict
from pipelines.schema import Schema, load_schema
from pipelines.serving.api import (
    ExplainResponse,
    Explanation,
    ModelBlock,
    ModelIdentity,
    MulticlassExplainResponse,
    MulticlassExplanation,
    MulticlassPrediction,
    MulticlassPredictResponse,
    Prediction,
    PredictResponse,
    RegressionExplainResponse,
    RegressionExplanation,
    RegressionPrediction,
    RegressionPredictResponse,
)
from pipelines.serving.evaluators import treelite_evaluator

SCHEMA_FILE = "schema.yaml"
REFERENCE_FILE = "reference.json"  # the monitoring reference profile, stored with the model
FAIRNESS_FILE = "fairness.json"  # the test rows' fairness audit: its groups label served decisions


@dataclass(frozen=True)
class RowEncoder:
    """Encodes validated raw records into the model's float32 matrix, row by row.

    The columns are :func:`pipelines.core.features.feature_names` (numeric features as floats
    with ``None`` as NaN, one 0/1 column per category, all 0 for ``None``), in the order the
    model was trained on.
    """

    columns: tuple[str, ...]
    numeric: tuple[tuple[str, int], ...]
    categorical: tuple[tuple[str, Mapping[Any, int]], ...]

    @classmethod
    def from_schema(cls, schema: Schema, columns: Sequence[str] | None = None) -> RowEncoder:
        """Build the encoder; ``columns`` (the model's feature order) defaults to the schema's.

        Raises:
            PipelineError: ``columns`` are not the columns the schema encodes to.
        """
        expected = feature_names(schema)
        columns = list(columns) if columns is not None else expected
        if sorted(columns) != sorted(expected):
            missing = sorted(set(expected) - set(columns))
            extra = sorted(set(columns) - set(expected))
            raise PipelineError(
                "the model was trained on other features than schema.yaml encodes to "
                f"(the schema adds {missing}, the model has {extra}): retrain the model "
                "(`make repro`) or serve it with the schema it was trained with"
            )
        index = {name: i for i, name in enumerate(columns)}
        numeric = []
        categorical = []
        for name, feature in schema.features.items():
            if feature.type == "category":
                cats = {c: index[f"{name}={c}"] for c in feature.categories or ()}
                categorical.append((name, cats))
            else:
                numeric.append((name, index[name]))
        return cls(tuple(columns), tuple(numeric), tuple(categorical))

    @property
    def width(self) -> int:
        """Number of model columns."""
        return len(self.columns)

    def encode(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Encode records (mappings of raw feature name to value) into a float32 matrix.

        Raises:
            ValueError: A record lacks a feature or holds an unknown category (records should
                have been validated by :func:`record_model` first).
        """
        nan = float("nan")
        width = self.width
        rows = []
        for position, record in enumerate(records):
            row = [0.0] * width
            try:
                for name, column in self.numeric:
                    value = record[name]
                    row[column] = nan if value is None else value
                for name, categories in self.categorical:
                    value = record[name]
                    if value is not None:  # missing: 0 in every one-hot column, as in encode()
                        row[categories[value]] = 1.0
            except KeyError as error:
                raise ValueError(
                    f"record {position}: missing feature or unknown category {error}"
                ) from None
            rows.append(row)
        return np.array(rows, dtype=np.float32).reshape(len(rows), width)

    def groups(self, schema: Schema) -> tuple[list[str], np.ndarray]:
        """Raw feature names, and a 0/1 matrix (model column x raw feature).

        Multiplying per-column values by it sums each category's one-hot columns into its feature.
        """
        names = list(schema.features)
        matrix = np.zeros((self.width, len(names)), dtype=np.float64)
        position = {name: j for j, name in enumerate(names)}
        for name, column in self.numeric:
            matrix[column, position[name]] = 1.0
        for name, categories in self.categorical:
            for column in categories.values():
                matrix[column, position[name]] = 1.0
        return names, matrix


# ---------------------------------------------------------------------------------------------
# Scoring and explanations


SMALL_BATCH = 8  # rows up to which treelite's evaluator beats XGBoost's per-call overhead


@dataclass(frozen=True)
class Scorer:
    """Outputs, margins and per-column contributions of a loaded model on a float32 matrix.

    The output is the task's (:func:`pipelines.core.model.predict`): a binary classifier's
    positive-class probability, a multiclass one's probability per class (rows x classes, in the
    schema's class order), a regression's value. XGBoost scores through
    ``Booster.inplace_predict`` (no DMatrix, no DataFrame); a linear model or the dummy by
    NumPy's maths of its numbers (:mod:`pipelines.core.linear`); another scikit-learn pipeline
    through scikit-learn; the ``prior`` (the service's last fallback) is a constant held in
    ``model``.

    A request is mostly one row, where XGBoost 3.2 spends ~0.25 ms (up to 0.5 ms in a busy
    server) setting up each call: it rebuilds its view of all the trees and reads the cgroup
    CPU quota every time. With ``small`` (see :meth:`of`), batches of up to ``SMALL_BATCH`` rows
    go through treelite's tree evaluator instead, ~0.025 ms for one row, the same model
    converted once; larger ones stay with XGBoost, which is faster per row.
    """

    kind: str
    model: Any
    columns: tuple[str, ...]
    small: Callable[[np.ndarray], np.ndarray] | None = None
    task: Task = "binary"

    @classmethod
    def of(cls, loaded: LoadedModel, threads: int | None = None, *, small: bool = False) -> Scorer:
        """The scorer of a model read by :func:`pipelines.core.model.load_model`.

        Args:
            loaded: The model and its ``meta.json``.
            threads: XGBoost's OpenMP threads; ``None`` keeps its default (all cores).
            small: Also prepare treelite's evaluator for batches of up to ``SMALL_BATCH`` rows
                (what a service wants; batch scoring does not).
        """
        model: Any = loaded.model
        evaluator = None
        if loaded.meta["kind"] == "xgboost":
            model = model.get_booster()
            if threads is not None:
                model.set_param({"nthread": threads})
            if small:
                evaluator = treelite_evaluator(model)
        return cls(
            kind=loaded.meta["kind"],
            model=model,
            columns=tuple(loaded.meta["features"]),
            small=evaluator,
            task=loaded.task,
        )

    def output(self, x: np.ndarray) -> np.ndarray:
        """The model's output per row: ``(rows,)``, or ``(rows, classes)`` for multiclass."""
        if self.kind == "xgboost":
            if self.small is not None and len(x) <= SMALL_BATCH:
                return self.small(x)
            # The encoder built x in the booster's column order; skip its per-call name check.
            output = self.model.inplace_predict(x, validate_features=False)
            return np.asarray(output, dtype=np.float64)
        if self.kind == "prior":
            return np.repeat(np.asarray(self.model, dtype=np.float64)[None], len(x), axis=0)
        if isinstance(self.model, Linear):
            return self.model.output(x)
        return np.asarray(predict(self.model, self._frame(x), self.task), dtype=np.float64)

    def contributions(
        self, x: np.ndarray, chosen: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-column contributions to the margin, the base value and the margin, per row.

        The margin is what the model turns into its output: a binary classifier's log-odds, a
        regression's prediction itself, a multiclass classifier's score of one class (of
        ``chosen``) before the softmax. XGBoost: exact tree SHAP values (``pred_contribs``).
        Linear models: coefficient times the scaled value; a missing-value indicator column
        counts towards its feature. The dummy looks at no feature: every contribution is 0 and
        the margin is its constant (the mean, the prior's log-odds or log-probability;
        :meth:`pipelines.core.linear.Linear.contributions`).

        Args:
            x: The encoded rows.
            chosen: A multiclass model's class position per row whose margin is explained
                (ignored for the other tasks).

        Returns:
            ``(contributions [rows x columns], base [rows], margin [rows])`` where
            ``base + contributions.sum(axis=1) == margin``.
        """
        rows = np.arange(len(x))
        pick = np.zeros(len(x), dtype=np.intp) if chosen is None else np.asarray(chosen, np.intp)
        if self.kind == "xgboost":
            from xgboost import DMatrix

            matrix = DMatrix(x, missing=np.nan, feature_names=list(self.columns))
            shap = np.asarray(self.model.predict(matrix, pred_contribs=True), dtype=np.float64)
            margin = np.asarray(self.model.inplace_predict(x, predict_type="margin"), np.float64)
            if self.task == "multiclass":  # (rows, classes, columns + 1) and (rows, classes)
                shap, margin = shap[rows, pick], margin[rows, pick]
            return shap[:, :-1], shap[:, -1], margin
        if not isinstance(self.model, Linear):
            raise PipelineError(
                f"a {self.kind} model of other steps than imputer, scaler and linear model "
                "cannot be explained"
            )
        return self.model.contributions(x, pick)

    def _frame(self, x: np.ndarray) -> Any:
        # The baseline was fitted on named columns; scikit-learn warns on every bare array.
        import pandas as pd

        return pd.DataFrame(x, columns=list(self.columns))


# ---------------------------------------------------------------------------------------------
# The served model


@dataclass(frozen=True)
class ServedModel:
    """Everything a request needs: encoder, scorer, the task's labels and the model block.

    ``classes`` are a classifier's classes in the model's order (binary: negative, positive);
    ``threshold`` is a binary classifier's, ``half_width`` a regression's interval's, ``gain`` the
    matrix (actual x decided) of a multiclass model that decides by value.
    """

    schema: Schema
    encoder: RowEncoder
    scorer: Scorer
    block: ModelIdentity
    classes: tuple[Any, ...] = ()
    threshold: float = 0.5
    half_width: float = 0.0
    gain: np.ndarray | None = None  # a multiclass model's gain matrix, when it decides by value
    _groups: tuple[list[str], np.ndarray] = field(init=False, repr=False, compare=False)
    _keys: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_groups", self.encoder.groups(self.schema))
        object.__setattr__(self, "_keys", tuple(str(c) for c in self.classes))

    @property
    def task(self) -> Task:
        """binary, multiclass or regression."""
        return self.scorer.task

    def output(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The model's output for validated records (:meth:`Scorer.output`)."""
        return self.scorer.output(self.encoder.encode(records))

    def predict(self, records: Sequence[Mapping[str, Any]]) -> BaseModel:
        """The task's predictions for validated records, in order (:data:`api.RESPONSES`)."""
        return self.answer(self.output(records))

    def answer(self, output: np.ndarray) -> BaseModel:
        """The ``/predict`` response for the model's output on some records."""
        if self.task == "regression":
            width = self.half_width
            return RegressionPredictResponse(
                predictions=[
                    RegressionPrediction(prediction=y, interval=(y - width, y + width))
                    for y in output.tolist()
                ],
                model=self.block,
            )
        if self.task == "multiclass":
            return MulticlassPredictResponse(
                predictions=[
                    MulticlassPrediction(label=label, probabilities=probabilities)
                    for label, probabilities in self._classes_of(output)
                ],
                model=self.block,
            )
        negative, positive = self.classes
        threshold = self.threshold
        predictions = [
            Prediction(probability=p, label=positive if p >= threshold else negative)
            for p in output.tolist()
        ]
        return PredictResponse(predictions=predictions, model=cast(ModelBlock, self.block))

    def decided(self, output: np.ndarray) -> list[int]:
        """A classifier's decision per row, as class positions (binary: 1 acts on the row).

        A binary model's in plain Python, a list as the metrics count it: for a request's row,
        0.25 us where NumPy's comparison takes 0.9.
        """
        if self.task == "multiclass":
            return list(decided_classes(output, self.gain).tolist())
        threshold = self.threshold
        return [int(p >= threshold) for p in output.tolist()]

    def explain(self, records: Sequence[Mapping[str, Any]]) -> BaseModel:
        """Per-raw-feature contributions to each record's margin, with base value and margin."""
        x = self.encoder.encode(records)
        output = self.scorer.output(x)
        chosen = output.argmax(axis=1) if self.task == "multiclass" else None
        contributions, base, margin = self.scorer.contributions(x, chosen)
        names, groups = self._groups
        per_feature = [
            dict(zip(names, row, strict=True)) for row in (contributions @ groups).tolist()
        ]
        if self.task == "regression":
            return RegressionExplainResponse(
                explanations=[
                    RegressionExplanation(prediction=y, base=b, contributions=c)
                    for y, b, c in zip(margin.tolist(), base.tolist(), per_feature, strict=True)
                ],
                model=self.block,
            )
        if self.task == "multiclass":
            return MulticlassExplainResponse(
                explanations=[
                    MulticlassExplanation(
                        label=label, probabilities=probabilities, margin=m, base=b, contributions=c
                    )
                    for (label, probabilities), m, b, c in zip(
                        self._classes_of(output),
                        margin.tolist(),
                        base.tolist(),
                        per_feature,
                        strict=True,
                    )
                ],
                model=self.block,
            )
        probability = 1.0 / (1.0 + np.exp(-margin))
        explanations = [
            Explanation(probability=p, margin=m, base=b, contributions=c)
            for p, m, b, c in zip(
                probability.tolist(), margin.tolist(), base.tolist(), per_feature, strict=True
            )
        ]
        return ExplainResponse(explanations=explanations, model=cast(ModelBlock, self.block))

    def _classes_of(self, output: np.ndarray) -> list[tuple[Any, dict[str, float]]]:
        """The decided class and each class's probability, per row of a multiclass output.

        The decided class is the most probable, or the one of the highest expected gain.
        """
        keys, classes = self._keys, self.classes
        decided = decided_classes(output, self.gain)
        return [
            (classes[top], dict(zip(keys, row, strict=True)))
            for top, row in zip(decided.tolist(), output.tolist(), strict=True)
        ]


def load_served(
    directory: Path, info: Mapping[str, Any], tag: str, schema: Schema | None = None
) -> ServedModel:
    """Load a model saved by :func:`import_model` (or a pipeline model dir plus its info).

    Never unpickles: XGBoost reads its UBJSON file, the scikit-learn models their numbers in
    ``linear.json`` (:func:`pipelines.core.model.load_model`).

    Args:
        directory: Holds the model file, ``meta.json`` and ``schema.yaml``.
        info: The model's serving info (see :func:`serving_info`).
        tag: The BentoML model tag, reported in every response.
        schema: The schema, when ``directory`` holds none (a model's baseline).

    Raises:
        PipelineError: The model's features do not match its schema, or its task is not the
            schema's.
    """
    loaded = load_model(directory)
    schema = schema or load_schema(Path(directory) / SCHEMA_FILE)
    target = schema.target
    if loaded.task != target.task:
        raise PipelineError(
            f"the model in {directory} is {loaded.task} but its schema says {target.task}: "
            "retrain the model (`make repro`) and import it again"
        )
    encoder = RowEncoder.from_schema(schema, loaded.meta["features"])
    identity = {
        "name": info["name"],
        "version": info.get("mlflow_version"),
        "git_commit": info.get("git_commit"),
        "data_md5": info.get("data_md5"),
        "mlflow_run_id": info.get("mlflow_run_id"),
        "bento_model_tag": tag,
    }
    # One request is one row or a small batch: OpenMP threads cost more than they give.
    scorer = Scorer.of(loaded, threads=1, small=True)
    if target.task == "binary":
        negative = next(value for value in target.labels if value != target.positive)
        return ServedModel(
            schema=schema,
            encoder=encoder,
            scorer=scorer,
            block=ModelBlock(**identity, threshold=loaded.threshold),
            classes=(negative, target.positive),
            threshold=loaded.threshold,
        )
    return ServedModel(
        schema=schema,
        encoder=encoder,
        scorer=scorer,
        block=ModelIdentity(**identity),
        classes=target.labels,
        half_width=loaded.half_width(),
        gain=loaded.gain,
    )
