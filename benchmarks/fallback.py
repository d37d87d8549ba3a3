"""Fallback benchmark: what the fallback chain costs a request the model answers, and a fallback's.

In-process, on the current model (``paths.model``) as the service loads it, one-row requests
(rows of the real table): the model's scoring alone against the same scoring through
:class:`pipelines.serving.fallback.Chain` (closed breaker, a deadline set), interleaved rounds,
medians compared. That comparison moves by a few percent either way with the machine's load
(two timings of ~60 us each), so the verdict is on the chain's own work, timed on a scoring
function that does nothing: at most 2% of the model's one-row scoring (it is two clock reads
and a state check; the fallbacks are not touched). Then the price of an answer from the
baseline and from the prior.

Usage: ``python -m benchmarks.fallback [--rounds N] [--calls N]`` (``make bench``)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pipelines.core.model import load_model
from pipelines.params import load_paths
from pipelines.schema import load_schema, read_raw
from pipelines.serving import fallback, scoring

OVERHEAD_TARGET = 1.02  # the chain over the model alone, one-row requests


def per_call_us(action: Callable[[Sequence[Any]], Any], rows: Sequence[Any], calls: int) -> float:
    """Mean microseconds per call of ``action(rows)`` over ``calls`` calls."""
    started = time.perf_counter()
    for _ in range(calls):
        action(rows)
    return (time.perf_counter() - started) / calls * 1e6


def interleaved_us(
    actions: dict[str, Callable[[Sequence[Any]], Any]], rows: Sequence[Any], rounds: int, calls: int
) -> dict[str, float]:
    """Median per-call microseconds of each action, the actions taking turns each round."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(rounds):
        for name, action in actions.items():
            times[name].append(per_call_us(action, rows, calls))
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    """Print the figures and the ratio's verdict; exit 1 when it misses its target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args(argv)
    paths = load_paths()
    schema = load_schema(paths.schema_)
    info = {"name": "bench"}
    served = scoring.load_served(paths.model, info, "bench:0", schema)
    links = [
        fallback.baseline_of(paths.model, served, info),
        fallback.prior_of(load_model(paths.model).meta, served),
    ]

    def chain_of(output: Callable[[Sequence[Any]], Any]) -> fallback.Chain:
        whole = fallback.chain_of(
            served,
            links,
            breaker=fallback.CircuitBreaker(5, 30.0),
            deadline=0.2,
            faults=fallback.Faults(),
            metrics=None,
        )
        whole.primary.output = output
        return whole

    row = read_raw(paths.raw)[list(schema.features)].head(1)
    rows = [
        {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in record.items()}
        for record in row.to_dict("records")
    ]
    model = interleaved_us(
        {"model": served.output, "chain": chain_of(served.output).score},
        rows,
        args.rounds,
        args.calls,
    )
    constant = np.zeros(1)

    def nothing(_: Sequence[Any]) -> np.ndarray:
        return constant

    bare = interleaved_us(
        {"nothing": nothing, "chain": chain_of(nothing).score}, rows, args.rounds, args.calls * 20
    )
    answers = {
        link.block.fallback or "": link
        for link in (served, *links)
        if isinstance(link, scoring.ServedModel) and link.block.fallback
    }
    priced = interleaved_us(
        {name: link.output for name, link in answers.items()}, rows, args.rounds, args.calls
    )
    own = bare["chain"] - bare["nothing"]
    ratio = (model["model"] + own) / model["model"]
    print(f"one-row scoring: model {model['model']:.1f} us, through the chain {model['chain']:.1f}")
    print(f"the chain's own work: {own:.2f} us per request")
    for name, micros in priced.items():
        print(f"an answer from the {name}: {micros:.1f} us")
    verdict = "ok" if ratio <= OVERHEAD_TARGET else "MISSED"
    print(f"(model + chain's own work) / model: {ratio:.4f} (<= {OVERHEAD_TARGET}) {verdict}")
    return 0 if ratio <= OVERHEAD_TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
