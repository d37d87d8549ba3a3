"""The tutorial way to serve the model, the serving benchmark's baseline.

FastAPI with a pydantic model of the record, one ``pd.DataFrame`` per request, the pipeline's
:func:`pipelines.core.features.encode` and the model's ``predict_proba`` (``predict`` for a
regression): the pattern most serving tutorials teach. It takes the service's request shape and
answers in the service's shape for the model's task, with the same numbers, so the two can be
compared request for request. Model, schema and threshold come from ``params.yaml`` in the
working directory.

Run: ``uvicorn benchmarks.naive_server:create_app --factory --host 127.0.0.1 --port 8000``
"""

# No `from __future__ import annotations`: FastAPI must see the request model built in
# create_app as a class, not as a name it would look up in this module.

from typing import Any

import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel, create_model

from pipelines.core.features import encode
from pipelines.core.model import load_model
from pipelines.params import load_paths
from pipelines.schema import Schema, load_schema

TYPES: dict[str, type] = {"integer": int, "number": float, "category": str}


def record_model(schema: Schema) -> type[BaseModel]:
    """A pydantic model of one raw record: a typed field per feature, optional where nullable."""
    fields: dict[str, Any] = {}
    for name, feature in schema.features.items():
        kind = TYPES[feature.type]
        fields[name] = (kind | None, None) if feature.nullable else (kind, ...)
    return create_model("Record", **fields)


def answers(output: Any, schema: Schema, threshold: float, half_width: float) -> list[Any]:
    """The service's predictions for the model's output, per task (the API's shapes)."""
    target = schema.target
    if target.task == "regression":
        return [
            {"prediction": float(y), "interval": [float(y) - half_width, float(y) + half_width]}
            for y in output
        ]
    if target.task == "multiclass":
        classes = list(target.labels)
        return [
            {
                "label": classes[int(row.argmax())],
                "probabilities": {str(c): float(p) for c, p in zip(classes, row, strict=True)},
            }
            for row in output
        ]
    positive = target.positive
    negative = next(value for value in target.labels if value != positive)
    return [
        {"probability": float(p), "label": positive if p >= threshold else negative} for p in output
    ]


def create_app() -> FastAPI:
    """Load the current model and build the app (``uvicorn --factory``)."""
    paths = load_paths()
    schema = load_schema(paths.schema_)
    model = load_model(paths.model)
    threshold = model.threshold
    half_width = model.half_width()
    info = {"kind": model.meta["kind"], "features": len(model.meta["features"])}

    record = record_model(schema)
    request_model = create_model("PredictRequest", records=(list[record], ...))  # type: ignore[valid-type]

    app = FastAPI(title="model server, tutorial-style")

    @app.post("/predict")
    def predict(request: request_model) -> dict[str, Any]:  # type: ignore[valid-type]
        records = request.records  # type: ignore[attr-defined]
        frame = pd.DataFrame([item.model_dump() for item in records])
        output = model.predict(encode(frame, schema))
        return {"predictions": answers(output, schema, threshold, half_width), "model": info}

    return app
