"""The request and response models of the service, generated from ``schema.yaml``.

Requests are validated by a strict pydantic model: every raw feature with its type, category
and range; unknown fields, NaN and infinities refused; at most ``serve.max_batch`` records.
Responses follow the model's task (:data:`RESPONSES`): a binary classifier answers a probability
and a label, a regression a value and its interval, a multiclass classifier a label and every
class's probability.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from pipelines.core.metrics import Task
from pipelines.schema import Schema

STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


# ---------------------------------------------------------------------------------------------
# Request and response models


def record_model(schema: Schema) -> type[BaseModel]:
    """A strict pydantic model of one raw record: one field per feature of the schema.

    Categories become ``Literal`` values, numeric ranges ``ge``/``le`` bounds, and only a
    feature whose schema allows missing values accepts ``null`` (it must still be present).
    Unknown fields, wrong JSON types (``true`` or ``"3"`` for a number), NaN and infinities
    are errors. An audit column (``audit:``, never a feature) is an optional field, checked by
    the same rules when sent: the model never reads it, the decision counters group by it.
    """
    fields: dict[str, Any] = {}
    for name, feature in schema.checked.items():
        annotation: Any
        if feature.type == "category":
            annotation = Literal[tuple(feature.categories or ())]
        else:
            kind = int if feature.type == "integer" else float
            annotation = Annotated[kind, Field(ge=feature.min, le=feature.max)]
        if feature.nullable or name in schema.audit:
            annotation = annotation | None
        default = None if name in schema.audit else ...
        fields[name] = (annotation, Field(default, description=feature.description or None))
    model: type[BaseModel] = create_model("Record", __config__=STRICT, **fields)
    return model


def request_model(schema: Schema, max_batch: int) -> type[BaseModel]:
    """The body of ``POST /predict`` and ``/explain``: ``{"records": [<1..max_batch records>]}``."""
    record: Any = record_model(schema)
    records: Any = Annotated[list[record], Field(min_length=1, max_length=max_batch)]
    model: type[BaseModel] = create_model("Records", __config__=STRICT, records=(records, ...))
    return model


class ModelIdentity(BaseModel):
    """Which model answered: carried by every response."""

    name: str
    version: str | None = Field(description="MLflow registered model version")
    git_commit: str | None
    data_md5: str | None
    mlflow_run_id: str | None
    bento_model_tag: str
    fallback: Literal["baseline", "prior"] | None = Field(
        default=None,
        description="null when the model answered; else what did, because the model failed "
        "(the X-Model-Fallback header says the same)",
    )


class ModelBlock(ModelIdentity):
    """Which binary classifier answered, and the threshold its labels follow."""

    threshold: float


class Prediction(BaseModel):
    """The positive-class probability of one record and its label at the threshold."""

    probability: float
    label: str | int


class PredictResponse(BaseModel):
    """One prediction per record, in order, and the model that made them."""

    predictions: list[Prediction]
    model: ModelBlock


class Explanation(BaseModel):
    """Additive contributions of each raw feature to one record's margin (log-odds).

    ``base + sum(contributions.values()) == margin`` and ``probability == sigmoid(margin)``.
    """

    probability: float
    margin: float
    base: float
    contributions: dict[str, float]


class ExplainResponse(BaseModel):
    """One explanation per record, in order, and the model that made them."""

    explanations: list[Explanation]
    model: ModelBlock


class RegressionPrediction(BaseModel):
    """The predicted value of one record and its prediction interval."""

    prediction: float
    interval: tuple[float, float] = Field(
        description="[low, high]: the prediction -/+ the split-conformal half-width, which holds "
        "the true value with the coverage serve.coverage asked for"
    )


class RegressionPredictResponse(BaseModel):
    """One prediction per record, in order, and the model that made them."""

    predictions: list[RegressionPrediction]
    model: ModelIdentity


class RegressionExplanation(BaseModel):
    """Additive contributions of each raw feature to one record's prediction.

    ``base + sum(contributions.values()) == prediction``.
    """

    prediction: float
    base: float
    contributions: dict[str, float]


class RegressionExplainResponse(BaseModel):
    """One explanation per record, in order, and the model that made them."""

    explanations: list[RegressionExplanation]
    model: ModelIdentity


class MulticlassPrediction(BaseModel):
    """The most probable class of one record and every class's probability."""

    label: str | int = Field(description="the most probable class, as the data writes it")
    probabilities: dict[str, float] = Field(description="class (as text) -> probability")


class MulticlassPredictResponse(BaseModel):
    """One prediction per record, in order, and the model that made them."""

    predictions: list[MulticlassPrediction]
    model: ModelIdentity


class MulticlassExplanation(BaseModel):
    """Additive contributions of each raw feature to the margin of one record's predicted class.

    ``base + sum(contributions.values()) == margin``, the class's score before the softmax that
    turns every class's margin into ``probabilities``.
    """

    label: str | int
    probabilities: dict[str, float]
    margin: float
    base: float
    contributions: dict[str, float]


class MulticlassExplainResponse(BaseModel):
    """One explanation per record, in order, and the model that made them."""

    explanations: list[MulticlassExplanation]
    model: ModelIdentity


@dataclass(frozen=True)
class Responses:
    """The response models of one task: ``/predict``'s and ``/explain``'s."""

    predict: type[BaseModel]
    explain: type[BaseModel]


RESPONSES: dict[Task, Responses] = {
    "binary": Responses(PredictResponse, ExplainResponse),
    "multiclass": Responses(MulticlassPredictResponse, MulticlassExplainResponse),
    "regression": Responses(RegressionPredictResponse, RegressionExplainResponse),
}
