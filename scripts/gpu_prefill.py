"""Shared set-up of the prefill scripts (run as `python3 scripts/NAME.py`, so this folder
is on the import path): the full-size random engine on the GPU and photo prompts, and the
wall time of one synchronized call."""

from __future__ import annotations

import time

import torch

from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import EnginePaths, RuntimeConfig
from tools.bench import full_size_random_engine, make_requests


def timed_ms(fn) -> float:
    """Milliseconds of one call of fn(), the GPU's work included."""
    torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return round((time.perf_counter() - started) * 1000, 1)


def engine_and_photo_prompts(count: int, seed: int = 5):
    """(engine, the prompts' prefill inputs, their shared prefix)."""
    base = full_size_random_engine("cuda", 280)
    engine = BatchEngine(base, RuntimeConfig(max_slots=8), EnginePaths(graph_batch_sizes=(1, 8)))
    prepared = [engine.prepare(r) for r in make_requests(count, 1, seed=seed)]
    return engine, [seq.inputs for seq in prepared], prepared[0].prefix
