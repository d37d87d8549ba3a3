"""A feature that alone predicts the target is named, on every task; real features are not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.core.leaks import THRESHOLD, likely_leaks, single_feature_scores
from pipelines.schema import infer_schema
from tests.support.tasks import TABLES, table

TASKS = ["regression", "multiclass"]


def with_leak(task: str, noise: float) -> tuple[pd.DataFrame, str]:
    """The task's real table with a column made from the target plus noise."""
    frame = table(task)
    target = TABLES[task][2]
    rng = np.random.default_rng(0)
    if task == "regression":
        signal = frame[target].to_numpy(dtype=float)
    else:
        signal = frame[target].astype("category").cat.codes.to_numpy(dtype=float)
    leak = signal + rng.normal(0.0, noise * signal.std(), len(frame))
    return frame.assign(refund_amount=leak), target


@pytest.mark.parametrize("task", TASKS)
def test_a_planted_leak_is_named_and_real_features_are_not(task: str) -> None:
    frame, target = with_leak(task, noise=0.01)
    schema = infer_schema(frame, target, "rownames")
    leaks = likely_leaks(frame, schema)
    assert [leak.feature for leak in leaks] == ["refund_amount"]
    assert leaks[0].score >= THRESHOLD[task]
    assert "refund_amount" in str(leaks[0])
    assert "drop it" in str(leaks[0])


@pytest.mark.parametrize("task", TASKS)
def test_a_noisy_copy_of_the_target_is_not_a_leak(task: str) -> None:
    """Half the target's spread in noise: informative, not the answer."""
    frame, target = with_leak(task, noise=0.5)
    schema = infer_schema(frame, target, "rownames")
    assert likely_leaks(frame, schema) == []


def test_a_binary_leak_scores_its_auc() -> None:
    """The score of a binary feature is the ROC AUC of its cross-validated predictions."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 1000)
    frame = pd.DataFrame(
        {
            "id": np.arange(1000),
            "y": np.where(y == 1, "yes", "no"),
            "perfect": y * 10.0 + rng.normal(0, 0.1, 1000),
            "coin": rng.normal(size=1000),
        }
    )
    schema = infer_schema(frame, "y", "id", "yes")
    scores = single_feature_scores(frame, schema)
    assert scores["perfect"] > 0.99
    assert 0.4 < scores["coin"] < 0.6
    assert [leak.feature for leak in likely_leaks(frame, schema)] == ["perfect"]


def test_the_validate_stage_lists_a_leak_and_warns_but_passes(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The data is valid (a leak is not bad data); the people deciding are told, in the file
    the pull-request comment reads, and on the terminal."""
    import json

    from pipelines.schema import dump_schema
    from pipelines.stages import validate

    frame, target = with_leak("regression", noise=0.01)
    schema = infer_schema(frame, target, "rownames")
    frame.to_csv(tmp_path / "raw.csv", index=False)
    (tmp_path / "schema.yaml").write_text(dump_schema(schema))
    out = tmp_path / "validation.json"
    argv = ["--raw", str(tmp_path / "raw.csv"), "--schema", str(tmp_path / "schema.yaml")]
    assert validate.main([*argv, "--out", str(out)]) == 0
    leaks = json.loads(out.read_text())["leaks"]
    assert [leak["feature"] for leak in leaks] == ["refund_amount"]
    assert leaks[0]["metric"] == "R²"
    assert "warning: `refund_amount` alone predicts the target" in capsys.readouterr().err
    # without the leak, the file says nothing of leaks (a binary repository's file is unchanged)
    frame.drop(columns="refund_amount").to_csv(tmp_path / "raw.csv", index=False)
    (tmp_path / "schema.yaml").write_text(
        dump_schema(infer_schema(frame.drop(columns="refund_amount"), target, "rownames"))
    )
    assert validate.main([*argv, "--out", str(out)]) == 0
    assert "leaks" not in json.loads(out.read_text())
