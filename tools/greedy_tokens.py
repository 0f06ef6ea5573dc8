"""Greedy token ids through the BatchEngine, with bf16 and with FP8 experts and keys and
values: run it with the code before and after a change that must not change the
arithmetic, and compare the JSONs (`--compare A B`, exit 1 when they differ). The engine is
not bit-exact from run to run on a GPU (H100: 3-4 of 20 sequences of 48 tokens part after
token 9-41 between two runs of the same code), so run the "before" twice: the change is
within that noise when it differs from both no more than they differ from each other. On
the CPU (the tiny checkpoint) two runs are equal.

    python3 -m tools.greedy_tokens --full-size-random OUT.json        # a GPU
    python3 -m tools.greedy_tokens --tiny --requests 2 OUT.json       # the CPU
    python3 -m tools.greedy_tokens --compare BEFORE.json AFTER.json
"""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path

SEED = 1234
WAYS = {"bf16": {}, "fp8": {"fp8_experts": True, "fp8_kv_cache": True}}


def greedy_tokens(args: argparse.Namespace) -> dict[str, list[list[int]]]:
    import torch

    from inference.runtime.batch_engine import BatchEngine
    from inference.runtime.config import RuntimeConfig
    from inference.types import Finished
    from tools.bench import load_engine, make_requests

    result = {}
    for name, settings in WAYS.items():
        torch.manual_seed(SEED)  # the same random weights each time (FP8 changes them)
        engine = BatchEngine(load_engine(args), RuntimeConfig(max_slots=32, **settings))
        done: dict[int, list[int]] = {}
        for index, request in enumerate(make_requests(args.requests, args.new_tokens, seed=3)):

            def emit(event, index=index, done=done) -> None:
                if isinstance(event, Finished):
                    done[index] = list(event.token_ids)

            engine.add(engine.prepare(request), emit, lambda: False)
        while len(done) < args.requests:
            engine.step()
        result[name] = [done[index] for index in range(args.requests)]
        engine.close()
        del engine
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return result


def differences(a: dict, b: dict) -> dict[str, list[tuple[int, int]]]:
    """Per way, (sequence, first token that differs) of the sequences that differ."""
    return {
        name: [(row, next(i for i, (x, y) in enumerate(zip(s, t, strict=True)) if x != y))
               for row, (s, t) in enumerate(zip(a[name], b[name], strict=True)) if s != t]
        for name in a
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from tools.bench_args import add_model_arguments

    parser = argparse.ArgumentParser(prog="python3 -m tools.greedy_tokens", description=__doc__)
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("BEFORE", "AFTER"))
    known, _ = parser.parse_known_args(argv)
    if known.compare:
        a, b = (json.loads(path.read_text()) for path in known.compare)
        parted = differences(a, b)
        print(json.dumps(parted))
        return 1 if any(parted.values()) else 0
    parser.add_argument("out", type=Path)
    parser.add_argument("--requests", type=int, default=20)
    add_model_arguments(parser)
    parser.set_defaults(new_tokens=48)
    args = parser.parse_args(argv)
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.out.write_text(json.dumps(greedy_tokens(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
