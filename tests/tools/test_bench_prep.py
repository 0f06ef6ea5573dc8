"""`python -m tools.bench_prep`: a smoke run (one call a stage, one photo a row)."""

from __future__ import annotations

import json
from pathlib import Path

from tools import bench_prep


def test_bench_prep_writes_stages_and_throughput(tmp_path: Path) -> None:
    out = tmp_path / "prep.json"
    argv = ["--repeats", "1", "--workers", "1,2", "--photos", "2", "--out", str(out)]
    assert bench_prep.main(argv) == 0
    data = json.loads(out.read_text())
    stages = {(row["photo"], row["stage"]): row for row in data["stages"]}
    assert len(stages) == len(bench_prep.PHOTOS) * 4
    for row in stages.values():
        assert row["cpu_ms"] > 0 and row["gil_ms"] >= 0
    rows = [(row["workers"], row["photo"], row["route"]) for row in data["throughput"]]
    assert rows == [(workers, photo, route) for workers in (1, 2) for photo in bench_prep.PHOTOS
                    for route in ("threads", "processes")]  # fmt: skip
    assert all(row["photos_per_s"] > 0 and row["photo_ms_mean"] > 0 for row in data["throughput"])
