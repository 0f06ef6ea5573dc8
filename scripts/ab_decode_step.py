"""Bursts of 64 photos on one engine (full-size random Gemma 4), alternating ways of the
decode step: as the engine runs it, with the compiled torch softmax instead of the Triton
kernel (kernels.softmax), and with indexed assignments instead of the KV write kernel
(kernels.kv_write); the decode graphs captured again at each switch. An A/B inside one
process, where two bench runs differ by ~1% from process to process.

    python3 scripts/ab_decode_step.py [--rounds 2] [--out ab-decode-step.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from inference.bench import bench_engine, full_size_random_engine, make_requests
from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import EnginePaths, RuntimeConfig
from inference.runtime.gemma4 import fast_ops
from inference.runtime.kernels import kv_write, softmax


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("ab-decode-step.json"))
    args = parser.parse_args()
    base = full_size_random_engine("cuda", 280)
    engine = BatchEngine(base, RuntimeConfig(), EnginePaths(graph_batch_sizes=(64,)))
    compiled = torch.compile(fast_ops.masked_softmax)
    ways = {  # (decode softmax, KV write)
        "as the engine runs": (softmax.masked_softmax, kv_write.write),
        "compiled softmax": (compiled, kv_write.write),
        "indexed KV writes": (softmax.masked_softmax, None),
        "both as before": (compiled, None),
    }
    requests = make_requests(64, 128)
    bench_engine(engine, make_requests(2, 4, seed=99), [0.0, 0.0], "warm-up")
    rows = []
    for _ in range(args.rounds):
        for name, (probs, write) in ways.items():
            engine.patch.attention.probs, engine.runner.cache.write_step = probs, write
            engine.runner._graphs.clear()
            engine.runner._capture()
            row = bench_engine(engine, requests, [0.0] * 64, name)
            rows.append({"way": name, "tok_per_s": row.tok_per_s,
                         "decode_step_ms": row.decode_step_ms})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
            args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
