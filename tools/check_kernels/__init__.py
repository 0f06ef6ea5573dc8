"""Each Triton kernel family the engine ships, checked against its float32 reference and
timed against the torch path it replaces, at Gemma 4 26B-A4B's sizes, with sweeps of the
kernel's tiles (how they were chosen: docs/performance.md):

    python3 -m tools.check_kernels FAMILY [--sizes 1,8,64] [--sweep] [--out F.json]

FAMILY: `experts` (decode steps' per-pair and expert-major kernels, bf16 and FP8 weights;
sizes: tokens), `prompt-experts` (prompts' grouped GEMMs; tokens), `decode-attention`
(FP8 keys and values, and bf16 after a kept prefix; rows), `softmax` (the decode step's
masked softmax; rows), `prompt-attention` (photo prompts after the cached system prompt;
prompts). Each row: the relative errors (largest difference over the reference's largest
value) and milliseconds per layer; a GPU times a CUDA graph replaying 8 layers with their
own weights (no cache reuse between layers). Printed, and written after each row.

On the CPU, Triton's interpreter runs the kernels at the tiny checkpoint's sizes (that the
command works, and the errors; its times mean nothing):

    TRITON_INTERPRET=1 python3 -m tools.check_kernels softmax --tiny --sizes 2
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Bench:
    """Where and at which sizes a family is checked: `text` the language model's config
    (tools.tiny's full-size one, or the tiny checkpoint's)."""

    device: torch.device
    text: dict
    layers: int  # each timing runs this many layers, each with its own tensors

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def randn(self, *shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        return torch.randn(*shape, device=self.device, dtype=dtype)

    def ms(self, run, repeats: int = 20) -> float:
        """Milliseconds per layer of run() (which runs all `layers`): a CUDA graph's replays
        on a GPU, one wall-clock call elsewhere."""
        if not self.cuda:
            started = time.perf_counter()
            run()
            return round((time.perf_counter() - started) * 1000 / self.layers, 4)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            run()
            run()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run()
        graph.replay()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        return round(start.elapsed_time(end) / repeats / self.layers, 4)

    def sweep(self, run, settings) -> list:
        """[(ms, setting)] of run(setting), best first; a setting that fails (e.g. out of
        shared memory) is printed and left out."""
        timings = []
        for setting in settings:
            try:
                timings.append((self.ms(lambda setting=setting: run(setting)), setting))
            except Exception as exc:
                print(f"  {setting}: {type(exc).__name__}", flush=True)
        return sorted(timings)


def relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest difference over the reference's largest value (5 digits)."""
    expected = expected.float()
    return round(((got.float() - expected).abs().max() / expected.abs().max()).item(), 5)


def write_rows(out: Path, device: torch.device, sizes: list[int], measure) -> dict:
    """measure(size) for each size: printed, and the JSON (device, rows) rewritten after
    each, so a run cut short keeps its rows."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result: dict = {"device": name, "rows": []}
    for size in sizes:
        row = measure(size)
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
    return result
