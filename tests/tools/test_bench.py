"""`travelbot bench` on the tiny checkpoint: a smoke run of every row kind (CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TRAVELBOT = Path(sys.executable).with_name("travelbot")


def test_bench_smoke_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [str(TRAVELBOT), "bench", "--tiny", "--new-tokens", "4", "--image-soft-tokens", "70",
         "--generate-batches", "1,2", "--generate-caches", "default", "--engine-concurrency",
         "1,3", "--worker-concurrency", "1,3", "--poisson-rate", "50", "--closed-loop-rounds",
         "2", "--fp8-experts", "3", "--long-context", "3", "--max-slots", "4",
         "--max-seq-len", "1536", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    names = [(row["name"], row["concurrency"]) for row in data["rows"]]
    assert ("engine, together", 3) in names and ("engine, Poisson 50.0/s", 3) in names
    assert ("engine, closed loop x2", 3) in names
    assert ("engine, no prefix cache", 3) in names  # the same run's baseline for the cache
    assert data["shared_prefix_tokens"] >= 32 and data["prefix_cache"]["hits"] > 0
    assert ("generate() default cache", 2) in names
    # the headline rows through the Worker, beside the engine's own, and their ratio
    assert ("worker, together", 1) in names and ("worker, together", 3) in names
    assert set(data["ratios"]["worker/engine"]) == {"x1", "x3"}
    assert data["ratios"]["worker/engine"]["x3"] > 0
    # where the bot's path spends its time before the engine: each stage timed, in order
    worker_x3 = next(
        r for r in data["rows"] if (r["name"], r["concurrency"]) == ("worker, together", 3)
    )
    stages = worker_x3["extra"]["stages"]
    for stage in ("normalize", "prepare", "wait"):
        median, longest = stages[f"{stage}_ms_median_max"]
        assert 0 <= median <= longest
    assert 0 < stages["last_started_s"] < worker_x3["seconds"]
    assert worker_x3["extra"]["prep_processes"] == 0  # on a CPU, prepared in threads
    # the prompts as long as Gemma 4's tokenizer would make them, the Worker's alike
    lengths = data["prompt_lengths"]
    assert lengths["fitted_to"] == "gemma-estimate" and lengths["chars_per_token"] == 4
    assert lengths["min"] <= lengths["median"] <= lengths["max"] < lengths["min"] + 8
    for row in data["rows"]:
        if row["name"] in ("engine, together", "worker, together", "engine, no prefix cache"):
            shortest, longest = row["extra"]["prompt_tokens_min_max"]
            assert lengths["min"] <= shortest <= longest <= lengths["max"], row
    # the photo cache keeps photos as it does while serving; a row's photos are forgotten
    # after it, so no other row (nor a closed loop's later round: new photos) finds them
    for row in data["rows"]:
        if row["name"].startswith("engine"):
            cache = row["extra"]["photo_cache"]
            assert cache["photos"] > 0, row
            if row["name"] != "engine, long context":  # its earlier photos are others' own
                assert cache["hits"] == 0, row
    # follow-ups whose conversations fill the context (less the answer and a margin)
    long = next(r for r in data["rows"] if r["name"] == "engine, long context")
    shortest, longest = long["extra"]["prompt_tokens_min_max"]
    assert 0.9 * 1536 <= shortest <= longest <= 1536 - 4
    # FP8 experts before generate(), which runs on the bf16 weights given back
    assert names.index(("engine, fp8 experts", 3)) < names.index(("generate() default cache", 1))
    assert data["generate_on_bf16_experts"]
    # the issue's targets this run has rows for (here x1's)
    step = data["targets"]["1 request: decode step ms"]
    assert step["bound"] == 6.0 and step["at_most"]
    assert step["value"] == next(
        r["decode_step_ms"]
        for r in data["rows"]
        if (r["name"], r["concurrency"]) == ("engine, together", 1)
    )
    assert step["met"] == (step["value"] <= 6.0)  # fmt: skip
    assert "target 1 request: decode step ms" in result.stdout
    for row in data["rows"]:
        assert row["error"] is None
        requests = row["extra"].get("requests", row["concurrency"])
        assert row["output_tokens"] == 4 * requests  # decode length is forced
        assert row["tok_per_s"] > 0
        # engine rows: the first token read back, whatever it decodes to (random weights
        # may show no text until the end); worker rows: the first text, if any showed
        if row["name"].startswith("engine") or row["ttft_p50_ms"] is not None:
            assert 0 < row["ttft_p50_ms"] <= row["ttft_p95_ms"]
        if row["name"].startswith(("engine", "worker")) and row["ttft_p95_ms"] is not None:
            assert row["ttft_p95_ms"] <= row["seconds"] * 1000 + 1  # within its wall (rounded)
    assert "engine, together x3" in data["ratios"]
    # the CPU runs no Triton kernel; the count is there (Triton's cache layout as expected)
    assert data["triton_compiles_while_serving"] == 0 and data["recompiles_while_serving"] == 0
    assert "tok/s" in result.stdout  # the printed table
    # closed engines are freed before the next rows measure their peak memory
    assert data["closed_engine_released"] and data["fp8 experts engine released"]
    assert data["no prefix cache engine released"]  # the cache's baseline: an engine of its own


def test_bench_keeps_the_tokenizers_own_prompt_lengths_when_asked(tmp_path: Path) -> None:
    """--prompt-lengths tokenizer: the prompts as the loaded tokenizer makes them (the tiny
    one learned the system prompt: shorter than the estimate), for a before/after against
    a bench that had no other lengths."""
    lengths = {}
    for fitted_to in ("tokenizer", "gemma-estimate"):
        out = tmp_path / f"{fitted_to}.json"
        result = subprocess.run(
            [str(TRAVELBOT), "bench", "--tiny", "--new-tokens", "2", "--image-soft-tokens", "70",
             "--generate-batches", "", "--engine-concurrency", "1", "--worker-concurrency", "",
             "--long-context", "", "--max-slots", "2", "--max-seq-len", "1024",
             "--prompt-lengths", fitted_to, "--out", str(out)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        data = json.loads(out.read_text())
        assert data["prompt_lengths"]["fitted_to"] == fitted_to
        row = next(r for r in data["rows"] if r["name"] == "engine, together")
        assert row["extra"]["prompt_tokens_min_max"][0] == data["prompt_lengths"]["min"]
        lengths[fitted_to] = data["shared_prefix_tokens"], data["prompt_lengths"]["min"]
    assert lengths["tokenizer"][0] < lengths["gemma-estimate"][0]
    assert lengths["tokenizer"][1] < lengths["gemma-estimate"][1]
