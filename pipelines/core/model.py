"""The model's files: making the model params name, saving it and loading it back, without pickle.

The model is saved in XGBoost's own UBJSON format, or with skops for the scikit-learn baselines,
whose loader builds only scikit-learn, NumPy and SciPy types and refuses anything else (a function
or class of someone else's code) instead of running it. A linear pipeline's numbers also go to
``linear.json`` (:mod:`pipelines.core.linear`), which is what is read back: NumPy alone.
``meta.json`` beside it says what the model is, which features it takes in which order, its
target (task and classes), a regression's prediction interval, and the cross-validation scores
when asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipelines.core import linear
from pipelines.core.io import PipelineError, atomic_path, write_json
from pipelines.core.metrics import (
    BinaryPredictions,
    MulticlassPredictions,
    Predictions,
    RegressionPredictions,
    Task,
)
from pipelines.params import TrainParams

META = "meta.json"
# The registered MLflow model's artifacts: this model directory and its schema
# (pipelines.stages.register logs them; pipelines.serving.mlflow_model reads them)
MODEL_ARTIFACT, SCHEMA_ARTIFACT = "model", "schema"
# Added to skops' default trust (scikit-learn estimators, NumPy/SciPy ufuncs, containers):
# the baseline's imputer stores its dtype. Building a dtype runs no foreign code.
SKOPS_TRUSTED = ["numpy.dtype"]
FILES = {
    "xgboost": "model.ubj",
    "logistic_regression": "model.skops",
    "ridge": "model.skops",
    "dummy": "model.skops",
}
# Which models fit which task (train.model in params.yaml)
KINDS: dict[Task, tuple[str, ...]] = {
    "binary": ("xgboost", "logistic_regression", "dummy"),
    "multiclass": ("xgboost", "logistic_regression", "dummy"),
    "regression": ("xgboost", "ridge", "dummy"),
}
# The linear baseline of each task, fitted beside the model and packed with it: the service
# answers from it when the model fails (pipelines/serving/fallback.py). Its own model directory
# (model file and meta.json) inside the model's.
BASELINE = "baseline"
BASELINE_KIND: dict[Task, str] = {
    "binary": "logistic_regression",
    "multiclass": "logistic_regression",
    "regression": "ridge",
}
OBJECTIVES: dict[Task, tuple[str, str]] = {  # XGBoost's objective and evaluation metric
    "binary": ("binary:logistic", "logloss"),
    "multiclass": ("multi:softprob", "mlogloss"),
    "regression": ("reg:squarederror", "rmse"),
}


class Model(Protocol):
    """What the stages need of a fitted model."""

    def fit(self, x: Any, y: Any) -> Any: ...  # noqa: D102
    def predict(self, x: Any) -> np.ndarray: ...  # noqa: D102


def check_kind(params: TrainParams, task: Task) -> None:
    """Refuse a model that cannot learn the task, or an objective of another task.

    Raises:
        PipelineError: Naming the key in params.yaml and the choices.
    """
    if params.model not in KINDS[task]:
        raise PipelineError(
            f"train.model: {params.model} cannot learn a {task} target: use one of "
            f"{', '.join(KINDS[task])}"
        )
    if params.xgboost.objective and task != "regression":
        raise PipelineError(
            f"train.xgboost.objective: {params.xgboost.objective} is a regression loss; a "
            f"{task} model's follows its task: remove the key"
        )


def xgboost_arguments(params: TrainParams, task: Task = "binary") -> dict[str, Any]:
    """Keyword arguments of the XGBoost model that ``params`` describes for ``task``."""
    objective, metric = OBJECTIVES[task]
    return params.xgboost.model_dump(exclude={"objective"}) | {
        "objective": params.xgboost.objective or objective,
        "eval_metric": metric,
        "tree_method": "hist",
        "random_state": params.seed,
    }


def make_model(params: TrainParams, task: Task = "binary") -> Model:
    """Build the unfitted model that ``params.model`` names, for ``task``."""
    check_kind(params, task)
    if params.model == "xgboost":
        from xgboost import XGBClassifier, XGBRegressor

        kind = XGBRegressor if task == "regression" else XGBClassifier
        return kind(**xgboost_arguments(params, task))  # type: ignore[no-any-return]
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if params.model == "dummy":
        from sklearn.dummy import DummyClassifier, DummyRegressor

        if task == "regression":
            return DummyRegressor(strategy="mean")  # type: ignore[return-value]
        return DummyClassifier(strategy="prior")  # type: ignore[return-value]
    if params.model == "ridge":
        from sklearn.linear_model import Ridge

        estimator: Any = Ridge(alpha=params.ridge.alpha)
    else:
        from sklearn.linear_model import LogisticRegression

        arguments = params.logistic_regression.model_dump()
        estimator = LogisticRegression(**arguments, random_state=params.seed)
    return make_pipeline(  # type: ignore[no-any-return]
        SimpleImputer(strategy="median", add_indicator=True), StandardScaler(), estimator
    )


def predict(model: Any, x: Any, task: Task) -> np.ndarray:
    """The model's output for each row.

    Binary: the positive class's probability; multiclass: a probability per class (columns in
    the schema's class order); regression: the value.
    """
    if task == "regression":
        return np.asarray(model.predict(x))
    # in the model's own precision: eval/predictions.csv writes what the model gave
    probabilities = np.asarray(model.predict_proba(x))
    return probabilities[:, 1] if task == "binary" else probabilities


def monitored_score(output: np.ndarray, task: Task) -> np.ndarray:
    """The one number per row whose distribution monitoring watches (drift, canary, alerts).

    Binary: the positive class's probability; multiclass: the top probability (how sure the
    model is); regression: the prediction. The reference profile bins it from the test rows'
    predictions and the service counts served rows into the same bins.
    """
    values = np.asarray(output, dtype=np.float64)
    return values.max(axis=1) if task == "multiclass" else values


def monitored_class(output: np.ndarray, task: Task) -> np.ndarray | None:
    """A multiclass model's predicted class per row, as positions in the schema's class order.

    The most probable class, as the service answers it; monitoring watches the share of rows
    predicted as each class beside the top probability, which a model that predicts one class
    twice as often with the same confidence leaves unchanged. None for other tasks.
    """
    if task != "multiclass":
        return None
    return np.asarray(output, dtype=np.float64).argmax(axis=1)


def task_of(meta: dict[str, Any]) -> Task:
    """The task of a model from its ``meta.json`` (a model from before tasks is binary)."""
    task: Task = meta.get("target", {}).get("task", "binary")
    return task


def threshold_of(meta: dict[str, Any]) -> float:
    """A binary model's decision threshold from its ``meta.json`` (0.5 for one from before)."""
    return float(meta.get("decision", {}).get("threshold", 0.5))


def read_threshold(directory: Path) -> float:
    """A binary model's decision threshold from ``meta.json`` alone (0.5 without the file)."""
    meta_file = Path(directory) / META
    return threshold_of(json.loads(meta_file.read_text()) if meta_file.is_file() else {})


def read_target(directory: Path) -> tuple[Task, tuple[Any, ...]]:
    """The task and classes of the model in ``directory``, from its ``meta.json`` alone."""
    meta_file = Path(directory) / META
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    target = meta.get("target", {})
    return task_of(meta), tuple(target.get("classes") or target.get("values") or ())


@dataclass(frozen=True)
class LoadedModel:
    """A model read back from its directory, with its metadata."""

    model: Model
    meta: dict[str, Any]

    @property
    def task(self) -> Task:
        """binary, multiclass or regression."""
        return task_of(self.meta)

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        """The model's output for each row of ``x`` (:func:`predict`)."""
        return predict(self.model, x[self.meta["features"]], self.task)

    def half_width(self) -> float:
        """Half the width of a regression's prediction interval (0 without one)."""
        return float(self.meta.get("interval", {}).get("half_width", 0.0))

    @property
    def threshold(self) -> float:
        """A binary model's decision threshold, as trained (:func:`threshold_of`)."""
        return threshold_of(self.meta)

    @property
    def gain(self) -> np.ndarray | None:
        """A multiclass model's gain matrix (actual x decided), when it decides by value."""
        gain = self.meta.get("decision", {}).get("gain")
        return None if gain is None else np.asarray(gain, dtype=np.float64)

    def predictions(
        self, ids: np.ndarray, label: np.ndarray, output: np.ndarray, threshold: float | None = None
    ) -> Predictions:
        """The model's predictions of rows from their labels and its outputs on them.

        Binary: labelled at ``threshold`` (default: the model's own); multiclass: the class the
        model decides (:func:`decide`); regression: the prediction with the model's interval.
        """
        if self.task == "multiclass":
            classes = self.meta["target"]["classes"]
            return MulticlassPredictions.of(ids, label, output, classes, self.gain)
        if self.task == "regression":
            width = self.half_width()
            return RegressionPredictions(ids, label, output, output - width, output + width)
        chosen = self.threshold if threshold is None else threshold
        return BinaryPredictions.at_threshold(ids, label, output, chosen)


def prior(y: np.ndarray, task: Task, classes: int, coverage: float = 0.9) -> dict[str, Any]:
    """The answer of no model at all, from the training labels (``meta.json``'s ``prior``).

    Binary: the positive share; multiclass: each class's share (in the schema's class order);
    regression: the mean, with the half-width that holds ``coverage`` of the labels around it.
    The service's last resort when both the model and its baseline fail.
    """
    labels = np.asarray(y, dtype=np.float64)
    if task == "regression":
        mean = float(labels.mean())
        width = float(np.quantile(np.abs(labels - mean), coverage))
        return {"output": round(mean, 8), "half_width": round(width, 8)}
    if task == "multiclass":
        shares = np.bincount(labels.astype(np.intp), minlength=classes) / len(labels)
        return {"output": [round(float(share), 8) for share in shares]}
    return {"output": round(float(labels.mean()), 8)}


def _write(model: Model, kind: str, meta: dict[str, Any], directory: Path) -> None:
    directory.mkdir()
    if kind == "xgboost":
        model.save_model(directory / FILES[kind])  # type: ignore[attr-defined]
    else:
        (directory / FILES[kind]).write_bytes(skops_bytes(model))
        numbers = linear.of(model, task_of(meta), len(meta.get("features", ())))
        if numbers is not None:
            write_json(directory / linear.FILE, numbers.as_json())
    write_json(directory / META, {"kind": kind, "file": FILES[kind], **meta})


ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip entry can say


def skops_bytes(model: Model) -> bytes:
    """The skops file of ``model``: the same bytes whenever the same model is saved.

    skops names each object (``__id__``) and array file by the object's ``id()`` and stamps each
    zip entry with the time of the dump, so two dumps of one model differ and DVC would see a
    new output on every run (a stale ``dvc.lock``). The ids are renumbered in order of first
    appearance (the dump walks the model in a fixed order) and every entry gets one fixed time;
    skops loads the file as before.
    """
    import io
    import re
    import zipfile

    import skops.io

    numbers: dict[int, int] = {}

    def number(value: int) -> int:
        return numbers.setdefault(value, len(numbers) + 1)

    def renumbered(node: Any) -> Any:
        if isinstance(node, list):
            return [renumbered(item) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "__id__" and isinstance(value, int):
                out[key] = number(value)
            elif key == "file" and isinstance(value, str) and re.fullmatch(r"\d+\.npy", value):
                out[key] = f"{number(int(value[:-4]))}.npy"
            else:
                out[key] = renumbered(value)
        return out

    written = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(skops.io.dumps(model))) as source,
        zipfile.ZipFile(written, "w", zipfile.ZIP_DEFLATED) as target,
    ):
        schema = renumbered(json.loads(source.read("schema.json")))
        for entry in source.infolist():
            name, data = entry.filename, source.read(entry.filename)
            if name == "schema.json":
                data = json.dumps(schema, indent=2).encode()
            elif re.fullmatch(r"\d+\.npy", name):
                name = f"{number(int(name[:-4]))}.npy"
            fixed = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(fixed, data)
    return written.getvalue()


def save_model(
    model: Model,
    kind: str,
    meta: dict[str, Any],
    directory: Path,
    baseline: tuple[Model, str, dict[str, Any]] | None = None,
) -> None:
    """Write the model file and ``meta.json`` into ``directory``, atomically as a whole.

    ``baseline`` (model, kind, meta) is written the same way into its subdirectory
    :data:`BASELINE`, so the model and its fallback travel as one DVC output and one bento model.
    """
    with atomic_path(directory) as partial:
        _write(model, kind, meta, partial)
        if baseline is not None:
            _write(*baseline, partial / BASELINE)


@dataclass(frozen=True)
class Trees:
    """An XGBoost model read back: its booster, answering as XGBoost's scikit-learn classes do.

    Not those classes themselves: they need scikit-learn, which the served image leaves out.
    """

    booster: Any
    task: Task

    def get_booster(self) -> Any:
        """The ``xgboost.Booster``."""
        return self.booster

    def predict(self, x: Any) -> np.ndarray:
        """A regression's values."""
        return np.asarray(self.booster.inplace_predict(x))

    def predict_proba(self, x: Any) -> np.ndarray:
        """A classifier's probability per class (binary: negative, positive)."""
        output = np.asarray(self.booster.inplace_predict(x))
        return np.column_stack([1.0 - output, output]) if self.task == "binary" else output


def loaded_files(directory: Path) -> list[str]:
    """The files of a model directory that :func:`load_model` reads (what to pack with it)."""
    meta = json.loads((Path(directory) / META).read_text())
    numbers = [linear.FILE] if (Path(directory) / linear.FILE).is_file() else []
    return [meta["file"], META, *numbers]


def load_model(directory: Path) -> LoadedModel:
    """Read a model directory written by :func:`save_model`, never unpickling anything."""
    meta = json.loads((Path(directory) / META).read_text())
    path = Path(directory) / meta["file"]
    if meta["kind"] == "xgboost":
        from xgboost import Booster

        model: Any = Trees(Booster(model_file=path), task_of(meta))
    elif (Path(directory) / linear.FILE).is_file():  # NumPy alone: no scikit-learn, no skops
        model = linear.read(Path(directory) / linear.FILE)
    else:  # a pipeline of other steps than the linear ones
        try:
            import skops.io
        except ImportError as error:
            raise PipelineError(
                f"{directory}: a scikit-learn pipeline of other steps than imputer, scaler and "
                "linear model loads with skops and scikit-learn, which this environment lacks: "
                "add both to the serve group in pyproject.toml"
            ) from error
        model = skops.io.load(path, trusted=SKOPS_TRUSTED)
    return LoadedModel(model=model, meta=meta)
