"""Scaling benchmark: the pipeline's stages on the real table and on larger resampled ones.

For each size the raw table is resampled with replacement to that many rows (new unique ids,
Gaussian noise on the numeric features so that the table does not compress unrealistically,
categories and labels as drawn, missing values kept within what the schema allows), written in
a scratch directory with its own ``params.yaml`` and ``schema.yaml``, and the stages run there
through the command lines ``dvc.yaml`` gives them, once per engine (``engine.kind``). So the
figures are whatever the stages do, whichever of them runs on Dask.

Per stage: wall time and the peak resident memory of its whole process tree (sampled every
50 ms). Per (size, engine): the fit time (from the train stage's "training" line to its "wrote"
line), µs and bytes per row, the test ROC AUC and the Dask - local gap. Then the exponent of
cost against rows (the least-squares slope of log time on log rows) and, from a straight line
through peak memory against rows, the row count at which the local engine needs 24 GiB.

Usage: ``python -m benchmarks.scale [--sizes real,1000000,5000000] [--engines local,dask]``
(``make bench-scale``)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil  # a dependency of BentoML, so always installed
import yaml

from pipelines.params import DEFAULT_PARAMS, load_paths
from pipelines.schema import Rows, Schema, load_schema, read_raw

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("validate", "featurize", "train", "evaluate")
SHARED_STAGES = ("validate",)  # do not depend on the engine: run once per size
GIB = 1024**3
MEMORY_LIMIT = 24 * GIB
NOISE = 0.1  # standard deviation of the numeric noise, as a share of the column's own
SAMPLE_SECONDS = 0.05
RELIST_SAMPLES = 10  # descendants are listed again every this many samples
MAX_DECIMALS = 6
FIT_START, FIT_END = "training ", "wrote "  # the train stage's lines around the fit


class BenchError(RuntimeError):
    """A stage failed or the inputs cannot be benchmarked; the message says what to do."""


# --- the resampled table ------------------------------------------------------------------


def _decimals(values: np.ndarray) -> int:
    """The fewest decimals that write every (finite) value of a column exactly."""
    values = values[np.isfinite(values)]
    for decimals in range(MAX_DECIMALS):
        if np.allclose(values, np.round(values, decimals), rtol=0, atol=1e-9):
            return decimals
    return MAX_DECIMALS


def resample(raw: pd.DataFrame, schema: Schema, rows: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` rows drawn with replacement from ``raw``, with noise on its numeric features.

    Args:
        raw: The raw table (every column of the schema).
        schema: Its schema: which columns are numeric, their ranges, types and null allowance.
        rows: How many rows to draw.
        seed: The same seed and rows give the same table.

    Returns:
        A table with the columns of ``raw``: ids 1..rows (as text when ``raw``'s are text);
        numeric features with Gaussian noise of ``NOISE`` times the column's standard deviation,
        clipped to the schema's range, rounded to the column's decimals (integers stay
        integers); missing values where drawn, at most the schema's ``max_null_fraction``.
    """
    rng = np.random.default_rng([seed, rows])
    table = raw.iloc[rng.integers(0, len(raw), size=rows)].reset_index(drop=True)
    ids = np.arange(1, rows + 1)
    table[schema.id] = ids if pd.api.types.is_numeric_dtype(raw[schema.id]) else ids.astype(str)
    for name, feature in schema.features.items():
        if feature.type == "category":
            continue
        original = raw[name].to_numpy(dtype=float)
        values = table[name].to_numpy(dtype=float, na_value=np.nan)
        spread = float(np.nanstd(original))
        if spread > 0:
            values = values + rng.normal(0.0, NOISE * spread, size=rows)
        low = -np.inf if feature.min is None else feature.min
        high = np.inf if feature.max is None else feature.max
        decimals = 0 if feature.type == "integer" else _decimals(original)
        values = np.round(np.clip(values, low, high), decimals)
        values = _cap_missing(values, feature.max_null_fraction, rng)
        if feature.type == "integer" and np.isnan(values).any():
            table[name] = pd.array(values, dtype="Int64")  # written without a decimal point
        else:
            table[name] = values.astype(np.int64) if feature.type == "integer" else values
    return table


def _cap_missing(values: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Fill drawn missing values beyond ``fraction`` with values drawn from the others.

    Drawing with replacement makes the share of missing values vary around the original's; on
    a small draw it can pass the schema's allowance, which the real table does not.
    """
    missing = np.flatnonzero(np.isnan(values))
    excess = len(missing) - math.floor(fraction * len(values))
    if excess <= 0:
        return values
    present = values[np.isfinite(values)]
    if len(present) == 0:
        return values
    values = values.copy()
    values[rng.choice(missing, size=excess, replace=False)] = rng.choice(present, size=excess)
    return values


def schema_for(schema: Schema, rows: int) -> Schema:
    """The schema with its row bounds widened to take a table of ``rows`` rows."""
    bounds = Rows(min=min(schema.rows.min, rows), max=max(schema.rows.max, rows))
    return schema.model_copy(update={"rows": bounds})


# --- running a stage ----------------------------------------------------------------------


@dataclass
class Run:
    """One stage's command, measured.

    Attributes:
        seconds: Wall time from start to exit.
        peak_bytes: Highest sampled resident memory of the process and all its descendants.
        load: The machine's 1-minute load average when it ended (others' work slows it).
        lines: Its output, each line with the seconds since start at which it arrived.
    """

    seconds: float
    peak_bytes: int
    load: float
    lines: list[tuple[float, str]] = field(repr=False)


class TreeMemory:
    """Resident memory of a process and all its descendants, read cheaply and often.

    Listing descendants reads every process of the machine, so it is done every
    ``RELIST_SAMPLES`` samples only (stages start their helpers early); reading the memory of
    the known ones is one small file each. The sampler itself then costs ~1% of a core.
    """

    def __init__(self, pid: int) -> None:
        self._error = psutil.Error
        self._root = psutil.Process(pid)
        self._known: list[Any] = [self._root]
        self._samples = 0

    def rss(self) -> int:
        """Bytes resident now, summed over the tree (0 once the process is gone)."""
        if self._samples % RELIST_SAMPLES == 0:
            try:
                self._known = [self._root, *self._root.children(recursive=True)]
            except self._error:
                return 0
        self._samples += 1
        total = 0
        for process in self._known:
            try:
                total += process.memory_info().rss
            except self._error:
                continue  # exited since it was listed
        return total


def measure(command: list[str], cwd: Path, env: dict[str, str]) -> Run:
    """Run ``command`` in ``cwd``, sampling its process tree's memory until it exits.

    Raises:
        BenchError: The command failed; the message carries the end of its output.
    """
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert process.stdout is not None  # noqa: S101 (set by stdout=PIPE)
        for line in process.stdout:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peak = 0
    memory = TreeMemory(process.pid)
    while process.poll() is None:
        peak = max(peak, memory.rss())
        time.sleep(SAMPLE_SECONDS)
    seconds = time.perf_counter() - start
    reader.join()
    if process.returncode != 0:
        tail = "\n".join(text for _, text in lines[-20:])
        raise BenchError(f"`{shlex.join(command)}` in {cwd} exited {process.returncode}:\n{tail}")
    return Run(seconds=seconds, peak_bytes=peak, load=os.getloadavg()[0], lines=lines)


def fit_seconds(lines: list[tuple[float, str]]) -> float | None:
    """Seconds between the train stage's "training" line and its "wrote" line, if both came."""
    start = next((t for t, text in lines if text.startswith(FIT_START)), None)
    end = next((t for t, text in lines if text.startswith(FIT_END)), None)
    return None if start is None or end is None else end - start


def stage_commands(dvc_yaml: dict[str, Any], params: dict[str, Any]) -> dict[str, list[str]]:
    """The command line of each benchmarked stage, ``${...}`` filled in from ``params``.

    Raises:
        BenchError: A stage is missing from ``dvc.yaml`` or its command names an unknown param.
    """

    def value(match: re.Match[str]) -> str:
        found: Any = params
        for key in match.group(1).split("."):
            if not isinstance(found, dict) or key not in found:
                raise BenchError(f"dvc.yaml names ${{{match.group(1)}}}, which params lack")
            found = found[key]
        return str(found)

    commands = {}
    for stage in STAGES:
        if stage not in dvc_yaml.get("stages", {}):
            raise BenchError(f"dvc.yaml has no stage {stage!r}: the benchmark runs {STAGES}")
        words = shlex.split(re.sub(r"\$\{([\w.]+)\}", value, dvc_yaml["stages"][stage]["cmd"]))
        commands[stage] = [sys.executable if words[0] == "python" else words[0], *words[1:]]
    return commands


# --- the benchmark ------------------------------------------------------------------------


@dataclass
class Result:
    """The stages of one (size, engine), measured."""

    size: str
    rows: int
    engine: str
    seconds: dict[str, float]
    peak_bytes: dict[str, int]
    load: dict[str, float]
    fit_seconds: float | None
    roc_auc: float | None

    @property
    def total_seconds(self) -> float:
        """Wall time of every stage, the shared ones included."""
        return sum(self.seconds.values())

    @property
    def peak(self) -> int:
        """The highest peak of any stage: the memory the pipeline needs at this size."""
        return max(self.peak_bytes.values())

    @property
    def peak_stage(self) -> str:
        """The stage that needs the most memory."""
        return max(self.peak_bytes, key=lambda stage: self.peak_bytes[stage])


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    # A cluster named here would run the work out of the sampled process tree
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"  # lines arrive when printed, so the fit can be timed
    return env


def _setup(directory: Path, params: dict[str, Any], schema: Schema, engine: str) -> Path:
    """Write ``params.yaml`` (with ``engine.kind``) and the schema into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    params = params | {"engine": params.get("engine", {}) | {"kind": engine}}
    (directory / DEFAULT_PARAMS).write_text(yaml.safe_dump(params, sort_keys=False))
    schema_path = directory / params["paths"]["schema"]
    document = schema.model_dump(mode="json", exclude_defaults=True)
    schema_path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return directory


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source.resolve())


def run_size(
    size: str,
    table: pd.DataFrame,
    schema: Schema,
    engines: list[str],
    *,
    workdir: Path,
    params: dict[str, Any],
    stages: tuple[str, ...] = STAGES,
) -> list[Result]:
    """Run ``stages`` on ``table`` once per engine (the shared stages once) in ``workdir``."""
    env = _environment()
    paths = load_paths(ROOT / DEFAULT_PARAMS)
    commands = stage_commands(yaml.safe_load((ROOT / "dvc.yaml").read_text()), params)
    schema = schema_for(schema, len(table))
    base = _setup(workdir / size, params, schema, engines[0])
    (base / paths.raw).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(base / paths.raw, index=False)
    shared: dict[str, Run] = {}
    for stage in (s for s in stages if s in SHARED_STAGES):
        print(f"  {size}: {stage}...", flush=True)
        shared[stage] = measure(commands[stage], base, env)
    results = []
    for engine in engines:
        directory = _setup(workdir / size / engine, params, schema, engine)
        for path in (paths.raw, paths.validation):
            if (base / path).exists():
                _link(base / path, directory / path)
        runs = dict(shared)
        for stage in (s for s in stages if s not in SHARED_STAGES):
            print(f"  {size}, {engine}: {stage}...", flush=True)
            runs[stage] = measure(commands[stage], directory, env)
        metrics = directory / paths.metrics
        auc = json.loads(metrics.read_text()).get("roc_auc") if metrics.exists() else None
        results.append(
            Result(
                size=size,
                rows=len(table),
                engine=engine,
                seconds={s: r.seconds for s, r in runs.items()},
                peak_bytes={s: r.peak_bytes for s, r in runs.items()},
                load={s: round(r.load, 2) for s, r in runs.items()},
                fit_seconds=fit_seconds(runs["train"].lines) if "train" in runs else None,
                roc_auc=auc,
            )
        )
    return results


def tables(sizes: list[str], seed: int = 0) -> Any:
    """Yield (label, table, schema) per size: ``real`` is the raw table itself."""
    paths = load_paths(ROOT / DEFAULT_PARAMS)
    schema = load_schema(ROOT / paths.schema_)
    if not (ROOT / paths.raw).exists():
        raise BenchError(f"{paths.raw} does not exist: run `make data` first")
    raw = read_raw(ROOT / paths.raw)
    for size in sizes:
        if size == "real":
            yield size, raw, schema
        else:
            yield size, resample(raw, schema, parse_rows(size), seed), schema


def parse_rows(size: str) -> int:
    """Rows of a size label: a whole number, ``real`` excepted (e.g. ``1000000`` or ``1e6``).

    Raises:
        BenchError: Not a positive whole number.
    """
    try:
        rows = float(size)
    except ValueError:
        rows = math.nan
    if not math.isfinite(rows) or rows < 1 or rows != int(rows):
        raise BenchError(f"size {size!r} is not a row count: give `real` or a whole number >= 1")
    return int(rows)


# --- the maths and the report -------------------------------------------------------------


def exponent(rows: list[int], seconds: list[float]) -> float | None:
    """Least-squares slope of log(seconds) on log(rows): 1 is linear (None under 2 sizes)."""
    if len(set(rows)) < 2:
        return None
    return float(np.polyfit(np.log(rows), np.log(seconds), 1)[0])


def rows_at(rows: list[int], peak_bytes: list[int], limit: float = MEMORY_LIMIT) -> float | None:
    """Rows at which a straight line through (rows, peak memory) reaches ``limit`` bytes.

    Returns:
        The extrapolated row count; None with fewer than 2 sizes or memory not growing.
    """
    if len(set(rows)) < 2:
        return None
    slope, intercept = np.polyfit(np.asarray(rows, float), np.asarray(peak_bytes, float), 1)
    return None if slope <= 0 else float((limit - intercept) / slope)


def _number(value: float | None, form: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, form)


def summary(results: list[Result]) -> dict[str, Any]:
    """Exponents per engine (total and fit, all sizes and the two largest), AUC gaps, 24 GiB."""
    figures: dict[str, Any] = {
        "exponent": {},
        "rows_at_24_gib": {},
        "rows_at_24_gib_by_stage": {},
        "auc_gap": {},
    }
    for engine in dict.fromkeys(r.engine for r in results):
        mine = sorted((r for r in results if r.engine == engine), key=lambda r: r.rows)
        largest = mine[-2:]
        timed = [r for r in mine if r.fit_seconds]
        figures["exponent"][engine] = {
            "total": exponent([r.rows for r in mine], [r.total_seconds for r in mine]),
            "total_two_largest": exponent(
                [r.rows for r in largest], [r.total_seconds for r in largest]
            ),
            "fit": exponent([r.rows for r in timed], [r.fit_seconds or 0 for r in timed]),
            "fit_two_largest": exponent(
                [r.rows for r in timed[-2:]], [r.fit_seconds or 0 for r in timed[-2:]]
            ),
        }
        figures["rows_at_24_gib"][engine] = rows_at([r.rows for r in mine], [r.peak for r in mine])
        figures["rows_at_24_gib_by_stage"][engine] = {
            stage: rows_at([r.rows for r in mine], [r.peak_bytes[stage] for r in mine])
            for stage in mine[-1].peak_bytes
            if all(stage in r.peak_bytes for r in mine)
        }
    for result in results:
        local = next((r for r in results if r.size == result.size and r.engine == "local"), None)
        if result.engine != "local" and local and result.roc_auc and local.roc_auc:
            figures["auc_gap"][f"{result.size} {result.engine}"] = result.roc_auc - local.roc_auc
    return figures


def report(results: list[Result], figures: dict[str, Any]) -> str:
    """The Markdown table of every (size, engine) and the sentences of its summary."""
    stages = list(dict.fromkeys(s for r in results for s in r.seconds))
    header = [
        "rows", "engine", *(f"{s} s" for s in stages), "fit s", "total s", "µs/row",
        "peak GiB", "bytes/row", "ROC AUC", "AUC gap",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        gap = figures["auc_gap"].get(f"{r.size} {r.engine}")
        cells = [
            f"{r.rows:,}" + (" (real)" if r.size == "real" else ""),
            r.engine,
            *(_number(r.seconds.get(s), ".1f") for s in stages),
            _number(r.fit_seconds, ".1f"),
            _number(r.total_seconds, ".1f"),
            _number(r.total_seconds / r.rows * 1e6, ".2f"),
            f"{_number(r.peak / GIB, '.2f')} ({r.peak_stage})",
            _number(r.peak / r.rows, ",.0f"),
            _number(r.roc_auc, ".4f"),
            _number(gap, "+.4f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    shared = [s for s in stages if s in SHARED_STAGES]
    if shared:
        lines.append(f"\n{', '.join(shared)}: run once per size (engine-independent).")
    lines.append(
        "fit s: from the train stage's line before the fit to the one after it (imports of "
        "XGBoost, a Dask cluster's start, the fit, the model's save); peak: the highest of the "
        "stages' process trees, and the stage that reached it."
    )
    for engine, slopes in figures["exponent"].items():
        lines.append(
            f"{engine}: time grows as rows^{_number(slopes['total'], '.2f')} over all sizes "
            f"(rows^{_number(slopes['total_two_largest'], '.2f')} between the two largest); "
            f"the fit as rows^{_number(slopes['fit'], '.2f')} "
            f"(rows^{_number(slopes['fit_two_largest'], '.2f')})."
        )
    for engine, rows in figures["rows_at_24_gib"].items():
        by_stage = figures["rows_at_24_gib_by_stage"].get(engine, {})
        stages_text = ", ".join(f"{s} {_number(n, ',.0f')}" for s, n in by_stage.items())
        lines.append(
            f"{engine}: peak memory reaches {MEMORY_LIMIT // GIB} GiB at about "
            f"{_number(rows, ',.0f')} rows (straight line through the measured peaks; "
            f"by stage: {stages_text})."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Generate the tables, run the stages per size and engine, print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="real,1000000,5000000", help="`real` and row counts")
    parser.add_argument("--engines", default="local,dask", help="engine.kind values to run")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same tables")
    parser.add_argument("--out", type=Path, default=Path("reports/bench-scale.json"))
    parser.add_argument("--workdir", type=Path, help="keep the scratch tables and outputs here")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    try:
        for size in sizes:
            if size != "real":
                parse_rows(size)
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as scratch:
            workdir = args.workdir or Path(scratch)
            params = yaml.safe_load((ROOT / DEFAULT_PARAMS).read_text())
            results: list[Result] = []
            for size, table, schema in tables(sizes, args.seed):
                print(f"{size}: {len(table):,} rows", flush=True)
                results += run_size(size, table, schema, engines, workdir=workdir, params=params)
                if args.workdir is None:
                    shutil.rmtree(workdir / size)  # 5M rows take gigabytes of disk
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    figures = summary(results)
    print(report(results, figures))
    print(f"(load average when done: {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {"results": [asdict(r) for r in results], **figures}
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
