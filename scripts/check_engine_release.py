"""Whether closing a batching engine gives its GPU memory back (full-size random Gemma 4):
GPU memory allocated before it is built, while it serves, and after `close()` and `del`;
if some stays, the chain of objects holding the largest tensor left.

    python3 scripts/check_engine_release.py [--graph-batches 1,8]
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json

import torch

from inference.bench import bench_engine, full_size_random_engine, make_requests
from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import EnginePaths, RuntimeConfig


def nbytes(tensor: torch.Tensor) -> int:
    try:
        return int(tensor.untyped_storage().nbytes())
    except Exception:  # e.g. a fake tensor of a compiled graph
        return 0


def gib() -> float:
    return round(torch.cuda.memory_allocated() / 2**30, 2)


def holders(target: object, ignore: set[int], depth: int = 6) -> list[str]:
    """One chain of referrers from `target` up to `depth` levels (types and short texts),
    past the objects in `ignore` (ids) and frames."""
    chain, current, seen = [], target, {id(target)} | ignore
    for _ in range(depth):
        referrers = [r for r in gc.get_referrers(current)
                     if id(r) not in seen and not inspect.isframe(r)]  # fmt: skip
        if not referrers:
            break
        current = referrers[0]
        seen.add(id(current))
        text = list(current)[:12] if isinstance(current, dict) else repr(current)[:160]
        chain.append(f"{type(current).__name__}: {text}")
    return chain


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--graph-batches", default="1,8")
    args = parser.parse_args()
    base = full_size_random_engine("cuda", 280)
    report = {"model_gib": gib()}
    batches = tuple(int(b) for b in args.graph_batches.split(","))
    engine = BatchEngine(base, RuntimeConfig(), EnginePaths(graph_batch_sizes=batches))
    bench_engine(engine, make_requests(16, 8), [0.0] * 16, "burst")
    report["serving_gib"] = gib()
    engine.close()
    del engine
    gc.collect()
    torch.cuda.empty_cache()
    report["after_close_gib"] = gib()
    print(json.dumps(report), flush=True)
    left = [t for t in gc.get_objects() if type(t) in (torch.Tensor, torch.nn.Parameter)
            and t.is_cuda and nbytes(t) > 2**26]  # fmt: skip
    left.sort(key=lambda t: -nbytes(t))
    params = {id(p) for p in base.model.parameters()} | {id(b) for b in base.model.buffers()}
    strays = [t for t in left if id(t) not in params][:3]
    report["largest_left"] = [
        {"shape": list(t.shape), "gib": round(nbytes(t) / 2**30, 3),
         "held_by": holders(t, {id(left), id(strays)})}
        for t in strays
    ]  # fmt: skip
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
