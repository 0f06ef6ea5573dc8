"""Where does a prefill make the CPU wait for the GPU? Runs one prefill of four photo
prompts (after the cached prefix) with torch's sync debug mode, and counts the call sites
of every synchronizing op (project and transformers frames of its stack).

    python3 scripts/find_syncs.py --out bench-out/prefill-syncs.json
"""

from __future__ import annotations

import argparse
import collections
import json
import traceback
import warnings
from pathlib import Path

import torch
from gpu_prefill import engine_and_photo_prompts


def call_site() -> str:
    frames = [
        f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"
        for frame in traceback.extract_stack()[:-3]
        if "/inference/" in frame.filename or "/transformers/" in frame.filename
    ]
    return " < ".join(reversed(frames[-4:]))


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench-out/prefill-syncs.json"))
    args = parser.parse_args()
    engine, inputs, prefix = engine_and_photo_prompts(4)
    engine.runner.prefill(inputs, [0, 1, 2, 3], prefix)
    sites: collections.Counter[str] = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        sites[f"{str(message)[:60]} @ {call_site()}"] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            engine.runner.prefill(inputs, [0, 1, 2, 3], prefix)
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    report = dict(sites.most_common())
    print(json.dumps(report, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
