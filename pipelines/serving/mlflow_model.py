"""The registered MLflow model: raw rows in, the model's prediction out.

MLflow runs this file when it loads the model ("models from code": nothing is pickled), with the
``pipelines`` package on its path and two artifacts: the model directory that
:func:`pipelines.core.model.save_model` wrote (XGBoost's JSON or skops, never a pickle) and
``schema.yaml``. Rows are checked against the schema and encoded exactly as the batch scorer
(:mod:`pipelines.serving.batch`) and the pipeline's evaluation do, so
``mlflow.pyfunc.load_model("models:/<name>/<version>").predict(raw_rows)`` and
``mlflow models serve`` give ``eval/predictions.csv``'s numbers for the same rows.

What comes out follows the task: a binary classifier's positive-class probabilities (an array,
one per row); a regression's and a multiclass classifier's table of the batch scorer's columns
(``prediction``, ``low``, ``high``; ``label`` and ``probability_<class>`` per class).

Not imported by the package: :func:`mlflow.models.set_model` at the bottom is how MLflow finds
the model in the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext

MODEL_ARTIFACT, SCHEMA_ARTIFACT = "model", "schema"  # as pipelines.core.model names them


class RawRowsModel(PythonModel):
    """The prediction of each raw row (the schema's feature columns), by the model's task."""

    def load_context(self, context: PythonModelContext) -> None:
        """Read the schema and the model from the logged artifacts."""
        from pipelines.core.model import load_model
        from pipelines.schema import load_schema

        self.schema = load_schema(Path(context.artifacts[SCHEMA_ARTIFACT]))
        self.model = load_model(Path(context.artifacts[MODEL_ARTIFACT]))

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: Any = None
    ) -> np.ndarray | pd.DataFrame:
        """Binary: probabilities, one per row, in order; else the batch scorer's columns.

        Raises:
            MlflowException: rows that break the schema (invalid parameter value: a 400 from
                ``mlflow models serve``), one line per broken rule naming the column, the rule
                and how many rows; nothing is scored.
        """
        from mlflow.exceptions import MlflowException

        from pipelines.serving.batch import check_table, columns, describe, outputs

        frame = pd.DataFrame(model_input).reset_index(drop=True)
        problems = check_table(frame, self.schema)
        if problems:
            message = describe(problems, len(frame), "the input")
            raise MlflowException.invalid_parameter_value(message)
        output = outputs(frame, self.schema, self.model)
        if self.model.task == "binary":
            return output
        return pd.DataFrame(columns(output, self.schema, self.model))


mlflow.models.set_model(RawRowsModel())
