"""Prefill time of the batching engine for prompt shapes seen before and new ones, with and
without cuDNN attention (cuDNN builds an execution plan per shape), and its parts.

    python scripts/prefill_shapes.py --out bench-out/prefill.json

Full-size Gemma 4 26B-A4B architecture with random weights, on the GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from gpu_prefill import timed_ms
from torch.nn.attention import SDPBackend

from inference.runtime import model_runner
from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import EnginePaths, RuntimeConfig
from tools.bench import full_size_random_engine, make_requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench-out/prefill.json"))
    args = parser.parse_args()
    base = full_size_random_engine("cuda", 280)
    engine = BatchEngine(base, RuntimeConfig(max_slots=16), EnginePaths(graph_batch_sizes=(1,)))
    runner = engine.runner
    requests = make_requests(8, 4)
    result: dict = {}
    without_cudnn = model_runner.PREFILL_ATTENTION
    for cudnn in (True, False):
        with_cudnn = [SDPBackend.CUDNN_ATTENTION, *without_cudnn]
        model_runner.PREFILL_ATTENTION = with_cudnn if cudnn else without_cudnn
        rows = {}
        for extra in range(3):  # a longer question each time: a new prompt length
            asked = [
                dataclasses.replace(r, question="where? " * (extra + 1 + 3 * cudnn))
                for r in requests
            ]
            inputs = [base.prepare_inputs(r, on_device=False) for r in asked]
            for batch in (1, 8):
                chosen = inputs[:batch]
                slots = list(range(batch))
                first = timed_ms(lambda c=chosen, s=slots: runner.prefill(c, s))
                again = timed_ms(lambda c=chosen, s=slots: runner.prefill(c, s))
                length = int(chosen[0]["input_ids"].shape[1])
                rows[f"x{batch} len {length}"] = {"new shape": first, "seen shape": again}
                print(f"cudnn={cudnn} x{batch} len {length}: new {first} ms, seen {again} ms")
        result[f"cudnn_sdp={cudnn}"] = rows
    inputs = [base.prepare_inputs(r, on_device=False) for r in requests]
    pixels = torch.cat([i["pixel_values"] for i in inputs]).to("cuda", torch.bfloat16)
    positions = torch.cat([i["image_position_ids"] for i in inputs]).to("cuda")
    with torch.inference_mode():
        vision = [
            timed_ms(lambda: base.model.model.get_image_features(pixels, positions))
            for _ in range(3)
        ]
    result["vision tower x8 ms"] = vision
    print(f"vision tower, 8 photos: {vision} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
