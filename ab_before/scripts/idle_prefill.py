"""Why is the first prefill after an idle GPU slower? After idle gaps of different lengths,
time either a fixed GPU-only workload (matmuls queued at once: no CPU in the loop) or a
prefill of four photo prompts after the cached prefix: CPU time to launch it, GPU time
(CUDA events) and wall time. If the matmuls slow down after a gap too, it is the GPU
(clocks); if only the prefill does, it is the host side. Run with nvidia-smi sampling
clocks alongside.

    python3 scripts/idle_prefill.py --out bench-out/idle-prefill.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from gpu_prefill import engine_and_photo_prompts


def matmuls_ms(a: torch.Tensor, count: int = 20) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(count):
        a @ a
    end.record()
    end.synchronize()
    return round(start.elapsed_time(end), 2)


def prefill_ms(runner, inputs, prefix) -> dict[str, float]:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    started = time.perf_counter()
    start.record()
    runner.prefill(inputs, list(range(len(inputs))), prefix)
    end.record()
    launched = time.perf_counter()
    end.synchronize()
    done = time.perf_counter()
    return {
        "launch_cpu_ms": round((launched - started) * 1000, 1),
        "gpu_ms": round(start.elapsed_time(end), 1),
        "wall_ms": round((done - started) * 1000, 1),
    }


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench-out/idle-prefill.json"))
    args = parser.parse_args()
    engine, inputs, prefix = engine_and_photo_prompts(4)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    rows = []
    for gap in (0, 0, 0.5, 0.5, 2, 2, 5, 5, 10, 10, 0, 0):
        for kind in ("matmuls", "prefill"):
            time.sleep(gap)
            at = time.time()
            result = (
                {"matmuls_ms": matmuls_ms(a)}
                if kind == "matmuls"
                else prefill_ms(engine.runner, inputs, prefix)
            )
            rows.append({"gap_s": gap, "kind": kind, "at": round(at, 3), **result})
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
