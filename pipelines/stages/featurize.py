"""Featurize stage: split the validated raw table by id and write the encoded train and test sets.

The split and the encoding are :mod:`pipelines.core.features`; this stage applies them to the
table, here or on a Dask cluster (``engine.kind``).

Usage: ``python -m pipelines.stages.featurize --raw RAW --schema SCHEMA --train OUT --test OUT``
"""

from __future__ import annotations

import functools

from pipelines.core.features import featurize, split
from pipelines.core.io import path_arguments, run_stage, write_atomically
from pipelines.params import EngineParams, FeaturizeParams, load_section
from pipelines.schema import load_schema, read_raw
from pipelines.stages import dask_engine


def main(argv: list[str] | None = None) -> int:
    """Split the validated raw table and write the encoded train and test sets."""
    args = path_arguments(__doc__.splitlines()[0], ("raw", "schema", "train", "test"), argv)
    params = load_section("featurize", FeaturizeParams)
    engine = load_section("engine", EngineParams)
    schema = load_schema(args.schema)

    if engine.kind == "dask":
        dask_engine.featurize_on_dask(
            args.raw,
            schema,
            params=params,
            engine=engine,
            train_path=args.train,
            test_path=args.test,
        )
        return 0
    train, test = split(read_raw(args.raw), schema, params.test_size, params.seed)
    for part, path in ((train, args.train), (test, args.test)):
        table = featurize(part, schema)
        write_atomically(path, functools.partial(table.to_parquet, index=False))
        print(f"wrote {path}: {len(table)} rows, {table.shape[1] - 2} features")
    return 0


if __name__ == "__main__":
    run_stage(main)
