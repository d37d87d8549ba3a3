"""Typed access to ``params.yaml``: each stage loads its own section into a frozen model.

A misspelt or unknown key fails at load time with the key's name, before any work is done.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from pipelines.core.io import PipelineError
from pipelines.core.metrics import BETTER, Better

DEFAULT_PARAMS = Path("params.yaml")


class Section(BaseModel):
    """Base of every params section: immutable, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # what an unknown key is not, in its error ("parameter of train.xgboost"); default: its path
    KEY_OF: ClassVar[str] = ""


class Paths(Section):
    """Where each file of the pipeline lives; ``dvc.yaml`` reads them too."""

    data: Path
    raw: Path
    schema_: Path = Field(alias="schema")
    validation: Path
    train: Path
    test: Path
    model: Path
    metrics: Path
    segments: Path
    fairness: Path = Path("eval/fairness.json")  # rates per group of fairness.sensitive
    predictions: Path
    plots: Path
    registry: Path
    mlflow: Path
    reference: Path
    requests: Path
    shadow: Path = Path("logs/shadow")  # shadow scoring's answers (pipelines/serving/shadow.py)
    card: Path
    card_text: Path

    @property
    def data_dvc(self) -> Path:
        """The ``.dvc`` file that records the hash of ``data``."""
        return self.data.with_name(self.data.name + ".dvc")


class DataParams(Section):
    """Where the offline copy of the raw table comes from (none: DVC only)."""

    package: str | None = None
    dataset: str | None = None

    @property
    def offline(self) -> bool:
        """Whether params name a packaged copy of the table to fall back on."""
        return self.package is not None and self.dataset is not None


class FeaturizeParams(Section):
    """How the table is split into train and test sets."""

    test_size: float = Field(gt=0, lt=1)
    seed: int


class XGBoostParams(Section):
    """Hyperparameters of the XGBoost model."""

    n_estimators: int = Field(ge=1)
    max_depth: int = Field(ge=1)
    learning_rate: float = Field(gt=0, le=1)
    subsample: float = Field(gt=0, le=1)
    colsample_bytree: float = Field(gt=0, le=1)
    min_child_weight: float = Field(ge=0)
    reg_lambda: float = Field(ge=0)
    # a regression's loss; a classifier's follows its task (binary:logistic, multi:softprob)
    objective: Literal["reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror"] | None = (
        None
    )


class LogisticRegressionParams(Section):
    """Hyperparameters of the scikit-learn baseline."""

    C: float = Field(gt=0)
    max_iter: int = Field(ge=1)


class RidgeParams(Section):
    """Hyperparameters of a regression's linear baseline."""

    alpha: float = Field(default=1.0, gt=0)


class TrainParams(Section):
    """Which model to train, its seed and cross-validation.

    ``xgboost`` for every task; the linear baselines ``logistic_regression`` (classification)
    and ``ridge`` (regression); ``dummy``, the prior or the mean, which any model must beat.
    A regression keeps ``calibration_size`` of its training rows (by id hash) out of the fit:
    their residuals give the prediction interval (split conformal).
    """

    model: Literal["xgboost", "logistic_regression", "ridge", "dummy"]
    seed: int
    cv_folds: int = Field(ge=0)
    xgboost: XGBoostParams
    logistic_regression: LogisticRegressionParams
    ridge: RidgeParams = RidgeParams()
    calibration_size: float = Field(default=0.2, gt=0, lt=1)
    # a binary model's decision threshold: a probability, or ``value``: the one that maximises
    # the value model's gain on out-of-fold predictions of ``threshold_folds`` folds of the
    # training rows (folds by id hash, salted with ``seed``)
    threshold: Annotated[float, Field(gt=0, lt=1)] | Literal["value"] = 0.5
    threshold_folds: int = Field(default=3, ge=2)


class SearchEntry(Section):
    """One parameter's search: a range ``low`` to ``high`` (log scale when ``log``) or ``choices``.

    A range's ends and the choices have the type of the train parameter (an integer parameter
    is searched over integers) and keep its bounds.
    """

    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = Field(default=None, min_length=1)


def _check_entry(section: type[Section], key: str, entry: SearchEntry | None) -> SearchEntry | None:
    """Check one search entry against the train parameter it searches (its type and bounds)."""
    if entry is None:
        return None
    field = section.model_fields[key]
    kind: Any = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
    adapter: TypeAdapter[Any] = TypeAdapter(kind)

    def valid(what: str, value: Any) -> None:
        try:
            adapter.validate_python(value, strict=True)
        except ValidationError as error:
            raise ValueError(f"{what} {value!r}: {error.errors()[0]['msg']}") from None

    if entry.choices is not None:
        if entry.low is not None or entry.high is not None:
            raise ValueError("a range (low, high) or choices, not both")
        for choice in entry.choices:
            valid("choice", choice)
        return entry
    if entry.low is None or entry.high is None:
        raise ValueError("a range needs low and high (or give choices)")
    if field.annotation not in (int, float):
        raise ValueError("not a number: give choices, not a range")
    valid("low", entry.low)
    valid("high", entry.high)
    if entry.low >= entry.high:
        raise ValueError(f"low {entry.low} is not below high {entry.high}")
    if entry.log and entry.low <= 0:
        raise ValueError(f"a log range needs low above 0, not {entry.low}")
    return entry


def _space_of(name: str, section: type[Section]) -> type[Section]:
    """The search space of one model's section of train: an optional entry per parameter."""
    fields: dict[str, Any] = {
        key: (
            Annotated[SearchEntry | None, AfterValidator(partial(_check_entry, section, key))],
            None,
        )
        for key in section.model_fields
    }
    space = create_model(f"{section.__name__}Space", __base__=Section, **fields)
    space.KEY_OF = f"parameter of train.{name}"
    return space


XGBoostSpace = _space_of("xgboost", XGBoostParams)
LogisticRegressionSpace = _space_of("logistic_regression", LogisticRegressionParams)
RidgeSpace = _space_of("ridge", RidgeParams)


class SearchSpace(Section):
    """``tune.space``: per model section of train, the parameters to search."""

    KEY_OF: ClassVar[str] = "model section of train"

    xgboost: XGBoostSpace | None = None  # type: ignore[valid-type]
    logistic_regression: LogisticRegressionSpace | None = None  # type: ignore[valid-type]
    ridge: RidgeSpace | None = None  # type: ignore[valid-type]

    def of(self, model: str) -> dict[str, SearchEntry]:
        """The entries of ``model``'s section by parameter name (empty: nothing to search)."""
        section = getattr(self, model, None)
        if section is None:
            return {}
        return {key: entry for key, entry in section if entry is not None}


class TuneParams(Section):
    """``make tune`` (``tune:``): trials, a time limit, the seed, the folds and the space."""

    trials: int = Field(default=20, ge=1)
    timeout: float | None = Field(default=None, gt=0)  # seconds; None: all the trials
    seed: int = 0  # of the sampler and of the folds' hash
    folds: int = Field(default=3, ge=2)
    space: SearchSpace = SearchSpace()


class EngineParams(Section):
    """Where the train stage fits the model (``engine:``): in its own process, or on Dask.

    The Dask scheduler's address is not a param: it comes from ``DASK_SCHEDULER_ADDRESS``, so
    that moving the cluster does not make DVC retrain. Without it, the stage starts a local
    cluster of ``workers`` workers on 127.0.0.1 and closes it when done.
    """

    kind: Literal["local", "dask"] = "local"
    partitions: int = Field(default=4, ge=1)  # of the training features, spread over the workers
    workers: int = Field(default=2, ge=1)  # of the local cluster
    threads_per_worker: int = Field(default=1, ge=1)  # of the local cluster


class EvaluateParams(Section):
    """Segment columns and calibration bins (the decision threshold is the model's: train:)."""

    segments: tuple[str, ...]
    calibration_bins: int = Field(ge=2)


class RegressionCost(Section):
    """A regression's value model: the cost of one unit of error below and above the truth."""

    under: float = Field(ge=0)
    over: float = Field(ge=0)


class ValueParams(Section):
    """What the model's decisions are worth (``value:``), an assumption its owner states.

    Classification: ``gain`` per (actual, decision) cell and row; binary by cell name (``tp``,
    ``fp``, ``fn``, ``tn``: acting on a row is deciding its positive class), multiclass by actual
    class, then decided class (a cell left out gains 0). Regression: ``cost`` per unit of under-
    and over-prediction (its value is minus the cost). Every row's gain is multiplied by its
    ``amount`` column when one is named. Which shape fits which task is checked against the
    schema (:func:`pipelines.core.value.value_model`).
    """

    currency: str = Field(min_length=1, max_length=16)
    unit: str = Field(default="rows", min_length=1)  # what a row is, as in "per 1,000 rows"
    amount: str | None = None
    gain: dict[str, float] | dict[str, dict[str, float]] | None = None
    cost: RegressionCost | None = None
    resamples: int = Field(default=1000, ge=100)  # of the bootstrap of the lift over trivial
    seed: int = 0
    confidence: float = Field(default=0.95, gt=0.5, lt=1)

    @model_validator(mode="after")
    def _gain_or_cost(self) -> ValueParams:
        if (self.gain is None) == (self.cost is None):
            raise ValueError("give gain (classification) or cost (regression), one of them")
        return self


# The gaps between groups that fairness judges, per task (pipelines.core.fairness.GAPS)
GAP_NAMES = (
    "demographic_parity_difference",
    "equalized_odds_difference",
    "accuracy_difference",
    "mae_difference",
)


class FairnessParams(Section):
    """The groups a team names (``fairness:``): rates per group, gaps, and the gate's bounds.

    ``max_gap``: per gap, the largest the gate accepts; a pull request fails when the whole
    interval of its model's gap lies above it (wider than the bound beyond the test rows' noise).
    """

    sensitive: tuple[str, ...] = Field(min_length=1)
    min_group_rows: int = Field(default=50, ge=1)  # smaller groups are reported, not judged
    max_gap: dict[str, float] = Field(default_factory=dict)
    resamples: int = Field(default=1000, ge=100)
    seed: int = 0
    confidence: float = Field(default=0.95, gt=0.5, lt=1)

    @field_validator("max_gap")
    @classmethod
    def _known_gaps(cls, max_gap: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(max_gap) - set(GAP_NAMES))
        if unknown:
            raise ValueError(f"unknown gaps {unknown}: use {', '.join(GAP_NAMES)}")
        return max_gap


class RegisterParams(Section):
    """MLflow experiment and registered model name."""

    experiment: str
    model_name: str


Duration = Annotated[str, Field(pattern=r"^[1-9][0-9]*[smhd]$")]  # as Prometheus writes them


class SloParams(Section):
    """Service-level objectives: what the burn-rate alerts protect."""

    availability: float = Field(gt=0, lt=1)
    latency: float = Field(gt=0)
    latency_target: float = Field(gt=0, lt=1)


class MonitorParams(Section):
    """The reference profile's bins, the drift verdict and the alerts (``monitor:``)."""

    bins: int = Field(ge=2, le=50)
    score_bins: int = Field(ge=2, le=50)
    window: Duration
    min_rows: int = Field(ge=1)
    false_alarm_rate: float = Field(gt=0, lt=0.5)
    psi_floor: float = Field(ge=0)
    alert_after: Duration
    slo: SloParams


class AlertingParams(Section):
    """Alertmanager's routing of the model's alerts (``alerting:``)."""

    webhook_url: str = Field(pattern=r"^https?://")
    webhook_token_file: str = Field(pattern=r"^/")
    group_wait: Duration
    group_interval: Duration
    page_repeat: Duration
    ticket_repeat: Duration


class CanaryParams(Section):
    """The canary release of the overlays that use deploy/components/canary (``canary:``)."""

    prometheus: str = Field(pattern=r"^https?://")
    weights: tuple[int, ...] = Field(min_length=1)
    interval: Duration
    count: int = Field(ge=1)
    failure_limit: int = Field(ge=0)
    inconclusive_limit: int = Field(ge=0)
    consecutive_error_limit: int = Field(ge=0)
    max_error_ratio: float = Field(gt=0, lt=1)
    max_p99_seconds: float = Field(gt=0)
    min_rows: int = Field(ge=1)
    false_alarm_rate: float = Field(gt=0, lt=0.5)
    psi_floor: float = Field(ge=0)

    @field_validator("weights")
    @classmethod
    def _increasing(cls, weights: tuple[int, ...]) -> tuple[int, ...]:
        if list(weights) != sorted(set(weights)) or weights[0] < 1 or weights[-1] > 99:
            raise ValueError("weights must increase strictly, from 1 to 99 (100 comes last)")
        return weights


class ServeParams(Section):
    """Limits and concurrency of the HTTP service (``serve:`` in params.yaml)."""

    max_batch: int = Field(ge=1)
    max_body_bytes: int = Field(ge=1024)
    workers: Annotated[int, Field(ge=1)] | Literal["cpu_count"]
    threads: int = Field(ge=1)
    timeout: float = Field(gt=0)
    max_concurrency: int = Field(ge=1)
    access_log: bool
    tracing: bool
    metrics: bool
    request_log: float = Field(ge=0, le=1)
    # a regression's prediction interval holds the true value this often (split conformal)
    coverage: float = Field(default=0.9, gt=0, lt=1)
    # the fallback chain (pipelines/serving/fallback.py): a scoring call slower than this counts
    # as a failure of the model (None: never); this many failures in a row open the circuit
    # breaker, which sends requests to the baseline for breaker_cooldown seconds
    deadline_ms: float | None = Field(default=200.0, gt=0)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown: float = Field(default=30.0, ge=0)
    # shadow scoring (pipelines/serving/shadow.py): the share of answered requests a challenger
    # scores after the response, and its time budget per call
    shadow_rate: float = Field(default=0.1, ge=0, le=1)
    shadow_budget_ms: float = Field(default=20.0, gt=0)


class CardParams(Section):
    """The model card (``card:``): bootstrap intervals and which segment groups are shown."""

    min_segment_rows: int = Field(ge=1)
    resamples: int = Field(ge=100)
    seed: int
    confidence: float = Field(gt=0.5, lt=1)
    segment_metrics: tuple[str, ...] = Field(min_length=1)


class MetricRule(Section):
    """How one metric is gated."""

    better: Better
    floor: float | None = None
    ceiling: float | None = None
    tolerance: float = Field(ge=0)

    @model_validator(mode="after")
    def _bound_matches_direction(self) -> MetricRule:
        if self.better == "higher" and self.ceiling is not None:
            raise ValueError("a higher-is-better metric takes a floor, not a ceiling")
        if self.better == "lower" and self.floor is not None:
            raise ValueError("a lower-is-better metric takes a ceiling, not a floor")
        return self

    @property
    def sign(self) -> int:
        """+1 when higher is better, -1 when lower is better."""
        return 1 if self.better == "higher" else -1

    @property
    def bound(self) -> float | None:
        """The floor or the ceiling, whichever applies."""
        return self.floor if self.better == "higher" else self.ceiling

    def breaks_bound(self, value: float) -> bool:
        """Whether ``value`` is below the floor or above the ceiling."""
        if self.bound is None:
            return False
        return value < self.bound if self.better == "higher" else value > self.bound


class GateParams(Section):
    """The ``gate:`` section of params.yaml: rules per metric and bootstrap settings."""

    resamples: int = Field(ge=200)
    seed: int
    confidence: float = Field(gt=0.5, lt=1)
    metrics: dict[str, MetricRule] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _directions_from_the_registry(cls, data: Any) -> Any:
        """A metric's ``better`` is the registry's: params may leave it out, not contradict it."""
        if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
            return data
        unknown = sorted(set(data["metrics"]) - set(BETTER))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}: the gate knows {list(BETTER)}")
        metrics = {}
        for name, rule in data["metrics"].items():
            better = BETTER[name]
            if isinstance(rule, dict) and rule.get("better", better) != better:
                raise ValueError(f"metrics.{name}.better: {better} is better, not {rule['better']}")
            metrics[name] = {"better": better, **rule} if isinstance(rule, dict) else rule
        return data | {"metrics": metrics}


S = TypeVar("S", bound=Section)


class ParamsError(PipelineError):
    """``params.yaml`` is missing a section or has a bad value."""


def load_section(name: str, model: type[S], path: Path = DEFAULT_PARAMS) -> S:
    """Load one section of the params file into its typed model.

    Args:
        name: Top-level key of the section, e.g. ``"train"``.
        model: The section's model class.
        path: The params file.

    Returns:
        The validated, frozen section.

    Raises:
        ParamsError: The section is missing, has an unknown key or an invalid value.
    """
    document = yaml.safe_load(Path(path).read_text()) or {}
    if name not in document:
        raise ParamsError(f"{path}: section '{name}:' is missing")
    try:
        return model.model_validate(document[name])
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in (name, *e['loc']))}: {_message(model, name, e)}"
            for e in error.errors()
        )
        raise ParamsError(f"{path}: {problems}") from None


def load_optional(name: str, model: type[S], path: Path = DEFAULT_PARAMS) -> S | None:
    """Like :func:`load_section`, for a section that a params file may leave out (None then)."""
    document = yaml.safe_load(Path(path).read_text()) or {}
    return None if document.get(name) is None else load_section(name, model, path)


def _message(model: type[Section], name: str, error: Any) -> str:
    """An error's message; an unknown key's says which keys its section knows."""
    if error["type"] == "value_error":  # a validator's own words, without pydantic's prefix
        return str(error["ctx"]["error"])
    if error["type"] != "extra_forbidden":
        return str(error["msg"])
    section: type[Section] | None = model
    for part in error["loc"][:-1]:
        field = section.model_fields.get(str(part)) if section else None
        kinds = (field.annotation, *get_args(field.annotation)) if field else ()
        section = next((k for k in kinds if isinstance(k, type) and issubclass(k, Section)), None)
    if section is None:  # inside a list or a mapping
        return str(error["msg"])
    known = ", ".join(field.alias or key for key, field in section.model_fields.items())
    what = section.KEY_OF or f"key of {'.'.join(str(p) for p in (name, *error['loc'][:-1]))}"
    return f"not a {what} (known: {known})"


def load_paths(path: Path = DEFAULT_PARAMS) -> Paths:
    """Load the ``paths:`` section."""
    return load_section("paths", Paths, path)
