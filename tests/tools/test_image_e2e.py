"""The pure parts of `make image-e2e`: request records, timings, worker listing, metrics."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np

from tools import image_e2e


def test_request_record_is_plain_json() -> None:
    record = image_e2e.request_record(
        {"Ünits-Held": np.int64(3), "Monthly Income": np.float64(math.nan), "plan": "Yearly"}
    )
    assert record == {"Ünits-Held": 3, "Monthly Income": None, "plan": "Yearly"}
    assert json.loads(json.dumps(record, allow_nan=False)) == record


def test_timing_table_lists_every_step_and_the_total() -> None:
    table = image_e2e.timing_table([("bento", 8.24, "ok"), ("image", 132.0, "FAILED")])
    lines = table.splitlines()
    assert lines[2].split() == ["bento", "8.2", "ok"]
    assert lines[3].split() == ["image", "132.0", "FAILED"]
    assert lines[-1].split() == ["total", "140.2"]


def test_the_worker_listing_finds_workers_and_not_its_own_shell() -> None:
    worker = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "_bentoml_impl.worker.service"]
    )
    try:
        done = subprocess.run(
            ["sh", "-c", 'echo "$$"; ' + image_e2e.WORKER_PIDS],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        worker.kill()
        worker.wait()
    shell, *listed = done.stdout.split()
    assert str(worker.pid) in listed
    assert shell not in listed  # its command line holds the pattern, which must not match it


def test_fallbacks_that_did_not_load_are_read_from_the_metrics() -> None:
    text = (
        "# HELP model_fallback_unavailable 1 when the fallback could not be loaded\n"
        "# TYPE model_fallback_unavailable gauge\n"
        'model_fallback_unavailable{link="baseline",model="m"} 1.0\n'
        'model_fallback_unavailable{link="prior",model="m"} 0.0\n'
    )
    assert image_e2e.fallbacks_unavailable(text) == ["baseline"]
    assert image_e2e.fallbacks_unavailable(text.replace("} 1.0", "} 0.0")) == []
