"""Where does the CPU spend a prefill's time? (On an H100 a four-photo prefill is bound by
the CPU launching it: launch time equals GPU time.) cProfile of prefills of N photo
prompts after the cached prefix; prints the functions with the most own and cumulative time.

    python3 scripts/profile_prefill_cpu.py --photos 4 --out bench-out/prefill-cpu.txt
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from pathlib import Path

import torch
from gpu_prefill import engine_and_photo_prompts


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--out", type=Path, default=Path("bench-out/prefill-cpu.txt"))
    args = parser.parse_args()
    engine, inputs, prefix = engine_and_photo_prompts(args.photos)
    slots = list(range(args.photos))
    engine.runner.prefill(inputs, slots, prefix)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.repeat):
        engine.runner.prefill(inputs, slots, prefix)
    torch.cuda.synchronize()
    plain_ms = (time.perf_counter() - started) / args.repeat * 1000
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.repeat):
        engine.runner.prefill(inputs, slots, prefix)
    torch.cuda.synchronize()
    profiler.disable()
    text = io.StringIO()
    text.write(f"prefill of {args.photos} photos: {plain_ms:.1f} ms each without the profiler\n")
    stats = pstats.Stats(profiler, stream=text)
    for key in ("tottime", "cumulative"):
        stats.sort_stats(key).print_stats(args.top)
    print(text.getvalue())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text.getvalue())


if __name__ == "__main__":
    main()
