"""The one registry of the model's metrics, per task: name, label, direction, how each is computed.

Every part that shows or judges a metric reads it here: the evaluate stage writes the point
values (scikit-learn's definitions), the gate and the card resample the weighted ones, the
monitor and the bento's labels pick theirs by name. A model is one of three tasks (``binary``,
``multiclass``, ``regression``), each with its predictions type and its metrics. Each metric has
two functions that agree:

- ``point(predictions)``: its value on the rows as they are (scikit-learn's definition);
- ``weighted(rows, counts)``: its value for many resamples at once. Each resample is a row of
  counts (how often each test row was drawn), in the order of ``rows.order``, and the metric is
  a weighted sum over the rows prepared once (:meth:`Predictions.rows`). With all counts 1 it
  equals the point value.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import numpy as np

from pipelines.core import weighted as w

if TYPE_CHECKING:  # params.py reads the registry: loading params needs no pandas
    import pandas as pd

Better = Literal["higher", "lower"]
Task = Literal["binary", "multiclass", "regression"]
TASKS: tuple[Task, ...] = ("binary", "multiclass", "regression")
COLUMNS = ("id", "label", "probability", "predicted")  # of a binary eval/predictions.csv
PROBABILITY = "probability_"  # a multiclass model's column of each class's probability


class Predictions(Protocol):
    """One model's predictions on the test rows, whatever its task."""

    task: ClassVar[Task]

    @property
    def ids(self) -> np.ndarray: ...  # noqa: D102
    @property
    def label(self) -> np.ndarray: ...  # noqa: D102
    def __len__(self) -> int: ...
    @property
    def output(self) -> np.ndarray: ...  # noqa: D102
    def problem(self) -> str | None: ...  # noqa: D102
    def take(self, rows: np.ndarray) -> Any: ...  # noqa: D102
    def rows(self) -> Any: ...  # noqa: D102
    def to_frame(self) -> pd.DataFrame: ...  # noqa: D102


def _need(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing or frame.empty:
        raise ValueError(f"expected columns {list(columns)} and rows; missing {missing}")


@dataclass(frozen=True)
class BinaryPredictions:
    """A binary model's predictions (``eval/predictions.csv``: id, label, probability, predicted).

    ``label`` and ``predicted`` are 1 for the positive class, 0 otherwise.
    """

    task: ClassVar[Task] = "binary"
    ids: np.ndarray
    label: np.ndarray
    probability: np.ndarray
    predicted: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> BinaryPredictions:
        """Take the predictions out of a frame with the columns id, label, probability, predicted.

        Raises:
            ValueError: A column is missing or the table is empty.
        """
        _need(frame, COLUMNS)
        return cls(
            ids=frame["id"].to_numpy(),
            label=frame["label"].to_numpy(dtype=np.int8),
            probability=frame["probability"].to_numpy(dtype=np.float64),
            predicted=frame["predicted"].to_numpy(dtype=np.int8),
        )

    @classmethod
    def at_threshold(
        cls, ids: np.ndarray, label: np.ndarray, probability: np.ndarray, threshold: float
    ) -> BinaryPredictions:
        """Predictions whose predicted label is ``probability >= threshold``.

        The probabilities keep the model's precision (float32 for XGBoost): the CSV writes them
        so; the metrics compute in float64.
        """
        p = np.asarray(probability)
        return cls(np.asarray(ids), np.asarray(label), p, (p >= threshold).astype(np.int8))

    def to_frame(self) -> pd.DataFrame:
        """The rows of ``eval/predictions.csv``."""
        import pandas as pd

        return pd.DataFrame(
            {
                "id": self.ids,
                "label": self.label,
                "probability": self.probability.round(8),
                "predicted": self.predicted.astype(int),
            }
        )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def output(self) -> np.ndarray:
        """What the model gave for each row: the positive class's probability."""
        return self.probability

    def problem(self) -> str | None:
        """What makes these predictions unusable (NaN or out-of-range values), if anything."""
        bad = ~np.isfinite(self.probability) | (self.probability < 0) | (self.probability > 1)
        if bad.any():
            return f"{int(bad.sum())} probabilities are NaN or outside [0, 1]"
        if not np.isin(self.label, (0, 1)).all() or not np.isin(self.predicted, (0, 1)).all():
            return "labels and predicted labels must be 0 or 1"
        return None

    def take(self, rows: np.ndarray) -> BinaryPredictions:
        """The predictions of the given row positions, in that order."""
        return BinaryPredictions(
            self.ids[rows], self.label[rows], self.probability[rows], self.predicted[rows]
        )

    def rows(self) -> w.Sorted:
        """The rows sorted once for the weighted metrics."""
        return w.Sorted.of(self.label, self.probability, self.predicted)


@dataclass(frozen=True)
class MulticlassPredictions:
    """A multiclass model's predictions: one probability per class, classes in schema order.

    ``label`` and ``predicted`` are class positions (0 for ``classes[0]``); the CSV writes the
    classes themselves (``label``, ``predicted``) and a ``probability_<class>`` column per class.
    """

    task: ClassVar[Task] = "multiclass"
    ids: np.ndarray
    label: np.ndarray
    probability: np.ndarray  # rows x classes
    predicted: np.ndarray
    classes: tuple[Any, ...]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, classes: Sequence[Any]) -> MulticlassPredictions:
        """Read the CSV's frame back, the classes matched as text.

        Raises:
            ValueError: A column is missing, the table is empty, or a label is not a class.
        """
        columns = [f"{PROBABILITY}{c}" for c in classes]
        _need(frame, ["id", "label", "predicted", *columns])
        return cls(
            ids=frame["id"].to_numpy(),
            label=class_positions(frame["label"], classes),
            probability=frame[columns].to_numpy(dtype=np.float64),
            predicted=class_positions(frame["predicted"], classes),
            classes=tuple(classes),
        )

    @classmethod
    def of(
        cls,
        ids: np.ndarray,
        label: np.ndarray,
        probability: np.ndarray,
        classes: Sequence[Any],
        gain: np.ndarray | None = None,
    ) -> MulticlassPredictions:
        """Predictions that pick the most probable class.

        With a ``gain`` matrix (actual x decided): the class of the highest expected gain.
        """
        p = np.asarray(probability, dtype=np.float64)
        decided = decided_classes(p, gain)
        return cls(np.asarray(ids), np.asarray(label), p, decided, tuple(classes))

    def to_frame(self) -> pd.DataFrame:
        """The rows of ``eval/predictions.csv``, classes in the data's own terms."""
        import pandas as pd

        names = np.asarray(self.classes, dtype=object)
        columns = {"id": self.ids, "label": names[self.label], "predicted": names[self.predicted]}
        for position, name in enumerate(self.classes):
            columns[f"{PROBABILITY}{name}"] = self.probability[:, position].round(8)
        return pd.DataFrame(columns)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def output(self) -> np.ndarray:
        """What the model gave for each row: a probability per class."""
        return self.probability

    def problem(self) -> str | None:
        """What makes these predictions unusable, if anything."""
        p = self.probability
        bad = (~np.isfinite(p) | (p < 0) | (p > 1)).any(axis=1)
        if bad.any():
            return f"{int(bad.sum())} rows have a probability that is NaN or outside [0, 1]"
        k = len(self.classes)
        if p.shape[1] != k:
            return f"{p.shape[1]} probability columns for {k} classes"
        for name, values in (("labels", self.label), ("predicted labels", self.predicted)):
            if not np.isin(values, np.arange(k)).all():
                return f"{name} must be one of the {k} classes"
        return None

    def take(self, rows: np.ndarray) -> MulticlassPredictions:
        """The predictions of the given row positions, in that order."""
        return MulticlassPredictions(
            self.ids[rows],
            self.label[rows],
            self.probability[rows],
            self.predicted[rows],
            self.classes,
        )

    def rows(self) -> w.Classes:
        """The rows prepared once for the weighted metrics."""
        return w.Classes.of(self.label, self.probability, self.predicted)


@dataclass(frozen=True)
class RegressionPredictions:
    """A regression model's predictions and their intervals (id, label, prediction, low, high)."""

    task: ClassVar[Task] = "regression"
    ids: np.ndarray
    label: np.ndarray
    predicted: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> RegressionPredictions:
        """Read the CSV's frame back.

        Raises:
            ValueError: A column is missing or the table is empty.
        """
        _need(frame, ["id", "label", "prediction", "low", "high"])
        return cls(
            ids=frame["id"].to_numpy(),
            label=frame["label"].to_numpy(dtype=np.float64),
            predicted=frame["prediction"].to_numpy(dtype=np.float64),
            low=frame["low"].to_numpy(dtype=np.float64),
            high=frame["high"].to_numpy(dtype=np.float64),
        )

    def to_frame(self) -> pd.DataFrame:
        """The rows of ``eval/predictions.csv``."""
        import pandas as pd

        return pd.DataFrame(
            {
                "id": self.ids,
                "label": self.label,
                "prediction": self.predicted.round(8),
                "low": self.low.round(8),
                "high": self.high.round(8),
            }
        )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def output(self) -> np.ndarray:
        """What the model gave for each row: the predicted value."""
        return self.predicted

    def problem(self) -> str | None:
        """What makes these predictions unusable (NaN or infinite values), if anything."""
        values = np.column_stack([self.label, self.predicted, self.low, self.high])
        bad = (~np.isfinite(values)).any(axis=1)
        if bad.any():
            return f"{int(bad.sum())} rows have a label, prediction or interval that is NaN"
        return None

    def take(self, rows: np.ndarray) -> RegressionPredictions:
        """The predictions of the given row positions, in that order."""
        return RegressionPredictions(
            self.ids[rows], self.label[rows], self.predicted[rows], self.low[rows], self.high[rows]
        )

    def rows(self) -> w.Residuals:
        """The rows sorted once by absolute error for the weighted metrics."""
        return w.Residuals.of(self.label, self.predicted, self.low, self.high)


def decided_classes(probability: np.ndarray, gain: np.ndarray | None = None) -> np.ndarray:
    """A multiclass model's decision per row, as class positions.

    The most probable class, or with a ``gain`` matrix (actual x decided) the class of the
    highest expected gain.
    """
    p = np.asarray(probability, dtype=np.float64)
    return (p if gain is None else p.dot(gain)).argmax(axis=1)


def class_positions(values: Any, classes: Sequence[Any]) -> np.ndarray:
    """Each value's position in ``classes``, matched as text (a CSV reads 1 where YAML said '1').

    Raises:
        ValueError: A value is not one of the classes (the message counts them and shows some).
    """
    import pandas as pd

    text = pd.Series(values).astype("string")
    positions = pd.Index([str(c) for c in classes]).get_indexer(pd.Index(text.fillna("\0")))
    unknown = positions < 0
    if unknown.any():
        seen = sorted(set(text[unknown].fillna("<missing>")))[:5]
        raise ValueError(f"{int(unknown.sum())} labels are not classes {list(classes)}: {seen}")
    return positions.astype(np.int16)


def read_predictions(
    frame: pd.DataFrame, task: Task = "binary", classes: Sequence[Any] = ()
) -> Predictions:
    """The predictions of ``eval/predictions.csv``'s frame for a model of ``task``."""
    if task == "multiclass":
        return MulticlassPredictions.from_frame(frame, classes)
    if task == "regression":
        return RegressionPredictions.from_frame(frame)
    return BinaryPredictions.from_frame(frame)


# --- point values: scikit-learn's definitions, on the rows as they are --------------------------


def _sk() -> Any:
    from sklearn import metrics

    return metrics


def _both_classes(y: np.ndarray) -> bool:
    return len(np.unique(y)) == 2


def _roc_auc_point(p: BinaryPredictions) -> float:
    if not _both_classes(p.label):
        return math.nan
    return float(_sk().roc_auc_score(p.label, p.probability))


def _pr_auc_point(p: BinaryPredictions) -> float:
    if not _both_classes(p.label):
        return math.nan
    return float(_sk().average_precision_score(p.label, p.probability))


def _log_loss_point(p: BinaryPredictions | MulticlassPredictions) -> float:
    labels = list(range(p.probability.shape[1])) if p.probability.ndim == 2 else [0, 1]
    with warnings.catch_warnings():  # rounded probabilities sum to 1 within 1e-8, not sqrt(eps)
        warnings.filterwarnings("ignore", "The y_prob values do not sum to one")
        return float(_sk().log_loss(p.label, y_proba=p.probability, labels=labels))


def _brier_point(p: BinaryPredictions) -> float:
    return float(_sk().brier_score_loss(p.label, p.probability, pos_label=1))


def _accuracy_point(p: BinaryPredictions | MulticlassPredictions) -> float:
    return float(_sk().accuracy_score(p.label, p.predicted))


def _precision_point(p: BinaryPredictions) -> float:
    return float(_sk().precision_score(p.label, p.predicted, zero_division=0))


def _recall_point(p: BinaryPredictions) -> float:
    return float(_sk().recall_score(p.label, p.predicted, zero_division=0))


def _f1_point(p: BinaryPredictions) -> float:
    return float(_sk().f1_score(p.label, p.predicted, zero_division=0))


def _class_recalls(p: MulticlassPredictions) -> np.ndarray:
    """Recall of each class present in the labels."""
    present = np.unique(p.label)
    recalls = _sk().recall_score(p.label, p.predicted, labels=present, average=None)
    return np.asarray(recalls, dtype=np.float64)


def _balanced_accuracy_point(p: MulticlassPredictions) -> float:
    return float(_sk().balanced_accuracy_score(p.label, p.predicted))


def _macro_f1_point(p: MulticlassPredictions) -> float:
    labels = list(range(len(p.classes)))
    return float(
        _sk().f1_score(p.label, p.predicted, labels=labels, average="macro", zero_division=0)
    )


def _roc_auc_ovr_point(p: MulticlassPredictions) -> float:
    """Macro one-vs-rest ROC AUC; NaN when a class is absent from the labels."""
    if len(np.unique(p.label)) < len(p.classes):
        return math.nan
    return float(
        _sk().roc_auc_score(
            p.label,
            p.probability / p.probability.sum(axis=1, keepdims=True),
            multi_class="ovr",
            average="macro",
            labels=list(range(len(p.classes))),
        )
    )


def _min_class_recall_point(p: MulticlassPredictions) -> float:
    return float(_class_recalls(p).min())


def _rmse_point(p: RegressionPredictions) -> float:
    return float(_sk().root_mean_squared_error(p.label, p.predicted))


def _mae_point(p: RegressionPredictions) -> float:
    return float(_sk().mean_absolute_error(p.label, p.predicted))


def _r2_point(p: RegressionPredictions) -> float:
    return float(_sk().r2_score(p.label, p.predicted)) if len(p) > 1 else math.nan


def _coverage_point(p: RegressionPredictions) -> float:
    return float(np.mean((p.low <= p.label) & (p.label <= p.high)))


def _error_quantile_point(q: float) -> Callable[[RegressionPredictions], float]:
    def point(p: RegressionPredictions) -> float:
        return float(np.quantile(np.abs(p.predicted - p.label), q, method="inverted_cdf"))

    return point


# --- the registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One metric: how people read it, which way is better, and its two functions."""

    name: str
    label: str
    better: Better
    point: Callable[[Any], float]
    weighted: Callable[[Any, np.ndarray], np.ndarray]
    headline: bool = False  # printed by the evaluate stage and carried as a label of the bento

    @property
    def sign(self) -> int:
        """+1 when higher is better, -1 when lower is better."""
        return 1 if self.better == "higher" else -1


def _registry(*metrics: Metric) -> dict[str, Metric]:
    return {metric.name: metric for metric in metrics}


METRICS: dict[Task, dict[str, Metric]] = {
    "binary": _registry(
        Metric("roc_auc", "ROC AUC", "higher", _roc_auc_point, w.roc_auc, headline=True),
        Metric("pr_auc", "PR AUC (average precision)", "higher", _pr_auc_point, w.pr_auc, True),
        Metric("log_loss", "Log loss", "lower", _log_loss_point, w.log_loss, headline=True),
        Metric("brier", "Brier score", "lower", _brier_point, w.brier),
        Metric("accuracy", "Accuracy", "higher", _accuracy_point, w.accuracy),
        Metric("precision", "Precision", "higher", _precision_point, w.precision),
        Metric("recall", "Recall", "higher", _recall_point, w.recall),
        Metric("f1", "F1", "higher", _f1_point, w.f1, headline=True),
    ),
    "multiclass": _registry(
        Metric("log_loss", "Log loss", "lower", _log_loss_point, w.class_log_loss, True),
        Metric("accuracy", "Accuracy", "higher", _accuracy_point, w.class_accuracy, True),
        Metric(
            "balanced_accuracy",
            "Balanced accuracy",
            "higher",
            _balanced_accuracy_point,
            w.balanced_accuracy,
        ),
        Metric("macro_f1", "Macro F1", "higher", _macro_f1_point, w.macro_f1, headline=True),
        Metric(
            "roc_auc_ovr",
            "ROC AUC (macro, one vs rest)",
            "higher",
            _roc_auc_ovr_point,
            w.roc_auc_ovr,
            headline=True,
        ),
        Metric(
            "min_class_recall",
            "Lowest recall of a class",
            "higher",
            _min_class_recall_point,
            w.min_class_recall,
        ),
    ),
    "regression": _registry(
        Metric("rmse", "RMSE", "lower", _rmse_point, w.rmse, headline=True),
        Metric("mae", "MAE", "lower", _mae_point, w.mae, headline=True),
        Metric("r2", "R²", "higher", _r2_point, w.r2, headline=True),
        Metric(
            "coverage",
            "Interval coverage",
            "higher",
            _coverage_point,
            w.coverage,
            headline=True,
        ),
        Metric(
            "abs_error_p50",
            "Absolute error, median",
            "lower",
            _error_quantile_point(0.5),
            w.error_quantile(0.5),
        ),
        Metric(
            "abs_error_p90",
            "Absolute error, 90th percentile",
            "lower",
            _error_quantile_point(0.9),
            w.error_quantile(0.9),
        ),
    ),
}
# The value model's gain per 1,000 rows at the model's decisions (pipelines.core.value): not a
# function of the predictions alone (params say what each decision earns), gated like a metric.
VALUE = "value_per_1000"
# Which way each metric name improves, whatever the task (a name means one thing everywhere).
BETTER: dict[str, Better] = {
    name: metric.better for task in TASKS for name, metric in METRICS[task].items()
} | {VALUE: "higher"}


def headline(task: Task) -> tuple[str, ...]:
    """The metrics printed by the evaluate stage and carried as labels of the bento."""
    return tuple(name for name, metric in METRICS[task].items() if metric.headline)


def label_of(name: str) -> str:
    """How people read a metric's name (the first task that has it)."""
    if name == VALUE:
        return "Value per 1,000 rows"
    return next(METRICS[t][name].label for t in TASKS if name in METRICS[t])


def evaluation_metrics(
    predictions: Predictions, threshold: float | None = None
) -> dict[str, float]:
    """Every metric of the predictions' task, as the evaluate stage writes them.

    Besides the metrics: the number of rows, and for a binary model the decision threshold
    and the positive rate. Metrics undefined on these rows (an AUC with one class) are NaN.
    """
    if isinstance(predictions, BinaryPredictions | MulticlassPredictions):
        precise = predictions.probability.astype(np.float64)
        predictions = dataclasses.replace(predictions, probability=precise)
    values: dict[str, float] = {
        name: m.point(predictions) for name, m in METRICS[predictions.task].items()
    }
    if isinstance(predictions, BinaryPredictions):
        return values | {
            "threshold": float(threshold if threshold is not None else math.nan),
            "rows": len(predictions),
            "positive_rate": float(np.mean(predictions.label)),
        }
    return values | {"rows": len(predictions)}


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Every binary metric for labels ``y``, probabilities ``p`` and a decision threshold."""
    ids = np.arange(len(y))
    return evaluation_metrics(
        BinaryPredictions.at_threshold(ids, np.asarray(y), p, threshold), threshold
    )


def point_metrics(predictions: Predictions, names: list[str]) -> dict[str, float]:
    """The metrics of the predictions as they are (every row counted once), by resampling."""
    rows = predictions.rows()
    ones = np.ones((1, len(predictions)))
    registry = METRICS[predictions.task]
    return {name: float(registry[name].weighted(rows, ones)[0]) for name in names}


def interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of ``samples``; NaN when any sample is NaN (fail closed)."""
    if not np.all(np.isfinite(samples)):
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)
