"""`python3 -m tools.profile_decode` on the tiny checkpoint (CPU): it prints and writes a
decode step's time and top ops per batch size, and a prefill's time by module, top ops
and the Python functions launching it. Its kernel tables and sync sites need a GPU (on
the CPU the tables list CPU ops, and the syncs say so)."""

from __future__ import annotations

import json
from pathlib import Path

from tools.profile_decode import main


def test_profile_prints_and_writes_the_step_and_prefill_tables(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "profile.json"
    assert main(["--model", str(tiny_model_dir), "--device", "cpu", "--image-soft-tokens", "70",
                 "--batches", "2", "--prefill", "1", "--syncs", "--steps", "1", "--top", "4",
                 "--out", str(out)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    step = report["bf16 x2"]
    assert step["step_ms"] > 0 and "decode step of 2: " in printed
    assert step["kernels"][0]["name"] == "TOTAL" and len(step["kernels"]) == 5
    assert step["kernels"][0]["ms"] >= sum(row["ms"] for row in step["kernels"][1:]) > 0
    assert any(row["name"] == "aten::mm" for row in step["kernels"])  # the projections
    prefill = report["bf16 prefill x1"]
    assert prefill["wall_ms"] >= prefill["launch_cpu_ms"] > 0
    by_module = prefill["by_module_ms"]
    assert set(by_module) == {"vision tower encoder", "decoder layers (sliding)",
                              "decoder layers (global)"}  # fmt: skip
    assert 0 < sum(by_module.values()) <= prefill["wall_ms"]
    assert any("prefill" in row["function"] for row in prefill["launch_python_functions"])
    assert prefill["syncs"] == "needs CUDA"
    for title in ("top kernels", "CPU ops", "launching it: Python (cProfile)"):
        assert f"== {title}" in printed
