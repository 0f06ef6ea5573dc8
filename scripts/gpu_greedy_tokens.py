"""Greedy token ids of the full-size random Gemma 4 through the BatchEngine, in bf16 and
with FP8 experts and KV (GPU): run it with the code before and after a change that must
not change the arithmetic, and compare the JSONs (`--compare A B`). The engine is not
bit-exact from run to run on a GPU (H100: 3-4 of 20 sequences of 48 tokens part after
token 9-41 between two runs of the same code), so run the "before" twice: the change is
within that noise when it differs from both no more than they differ from each other.

    python3 scripts/gpu_greedy_tokens.py OUT.json
    python3 scripts/gpu_greedy_tokens.py --compare BEFORE.json AFTER.json
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path

import torch

SEED = 1234
WAYS = {"bf16": {}, "fp8": {"fp8_experts": True, "fp8_kv_cache": True}}


def greedy_tokens(requests: int, new_tokens: int) -> dict[str, list[list[int]]]:
    from inference.runtime.batch_engine import BatchEngine
    from inference.runtime.config import RuntimeConfig
    from inference.types import Finished
    from tools.bench import full_size_random_engine, make_requests

    result = {}
    for name, settings in WAYS.items():
        torch.manual_seed(SEED)  # the same random weights each time (FP8 changes them)
        engine = BatchEngine(full_size_random_engine("cuda", 280),
                             RuntimeConfig(max_slots=32, **settings))  # fmt: skip
        done: dict[int, list[int]] = {}
        for index, request in enumerate(make_requests(requests, new_tokens, seed=3)):

            def emit(event, index=index, done=done) -> None:
                if isinstance(event, Finished):
                    done[index] = list(event.token_ids)

            engine.add(engine.prepare(request), emit, lambda: False)
        while len(done) < requests:
            engine.step()
        result[name] = [done[index] for index in range(requests)]
        engine.close()
        del engine
        gc.collect()
        torch.cuda.empty_cache()
    return result


def differences(a: dict, b: dict) -> dict[str, list[tuple[int, int]]]:
    """Per way, (sequence, first token that differs) of the sequences that differ."""
    return {
        name: [(row, next(i for i, (x, y) in enumerate(zip(s, t, strict=True)) if x != y))
               for row, (s, t) in enumerate(zip(a[name], b[name], strict=True)) if s != t]
        for name in a
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--compare", type=Path, nargs=2)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--new-tokens", type=int, default=48)
    args = parser.parse_args()
    if args.compare:
        a, b = (json.loads(path.read_text()) for path in args.compare)
        print(json.dumps(differences(a, b)))
        return
    args.out.write_text(json.dumps(greedy_tokens(args.requests, args.new_tokens)))


if __name__ == "__main__":
    main()
