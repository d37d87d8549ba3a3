"""Profile stage: the reference that served rows are compared with, written at training time.

For every feature of the schema, fixed bins from the training rows and the training fraction per
bin; the same for the model's score on the test rows (its monitored score: a probability, a top
probability or a prediction, :func:`pipelines.core.model.monitored_score`), which is what a model
that has not drifted should see in production (:mod:`pipelines.core.profile`); for a multiclass
model also the share of test rows predicted as each class. One readable JSON
file, a DVC output, stored with the model in BentoML's store and so in the bento and its image.

Usage: ``python -m pipelines.stages.profile --raw RAW --schema SCHEMA --train TRAIN
--predictions PREDICTIONS --out REFERENCE``
"""

from __future__ import annotations

import pandas as pd

from pipelines.core.drift import min_share
from pipelines.core.features import ID
from pipelines.core.io import path_arguments, run_stage, write_json
from pipelines.core.metrics import read_predictions
from pipelines.core.model import monitored_class, monitored_score
from pipelines.core.profile import build_profile
from pipelines.params import MonitorParams, load_section
from pipelines.schema import load_schema, read_raw


def main(argv: list[str] | None = None) -> int:
    """Write the reference profile of the training rows and the test rows' scores."""
    names = ("raw", "schema", "train", "predictions", "out")
    args = path_arguments(__doc__.splitlines()[0], names, argv)
    params = load_section("monitor", MonitorParams)
    schema = load_schema(args.schema)
    train_ids = pd.read_parquet(args.train, columns=[ID])[ID]
    raw = read_raw(args.raw)
    rows = raw[raw[schema.id].isin(train_ids)]
    target = schema.target
    test = read_predictions(pd.read_csv(args.predictions), target.task, target.labels)
    scores = monitored_score(test.output, target.task)
    profile = build_profile(
        rows,
        scores,
        schema,
        params.bins,
        params.score_bins,
        share=min_share(params.min_rows, len(rows)),
        score_share=min_share(params.min_rows, len(scores)),
        predicted=monitored_class(test.output, target.task),
    )
    write_json(args.out, profile.to_json())
    print(
        f"wrote {args.out}: {len(profile.features)} features from {len(rows)} training rows, "
        f"score bins from {len(scores)} test rows"
    )
    return 0


if __name__ == "__main__":
    run_stage(main)
