"""python3 -m tools.check_kernels FAMILY ...: see tools/check_kernels/__init__.py."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tools.check_kernels import Bench, write_rows
from tools.check_kernels import __doc__ as DOC
from tools.check_kernels.attention import decode_attention, prompt_attention, softmax
from tools.check_kernels.experts import decode_experts, prompt_experts
from tools.tiny import FULL_SIZE_TEXT_CONFIG, TINY_TEXT_CONFIG

FAMILIES = {  # name: (measure(bench, sweep) → measure(size), default sizes)
    "experts": (decode_experts, "1,8,16,32,64,128"),
    "prompt-experts": (prompt_experts, "488,3904,7808"),
    "decode-attention": (decode_attention, "1,8,64"),
    "softmax": (softmax, "1,8,64"),
    "prompt-attention": (prompt_attention, "1,8"),
}


@torch.inference_mode()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m tools.check_kernels", description=DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("--sizes", help="comma-separated tokens, rows or prompts")
    parser.add_argument("--sweep", action="store_true", help="time the kernel's tiles too")
    parser.add_argument("--tiny", action="store_true", help="the tiny checkpoint's sizes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="default: bench-out/check-FAMILY.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    text = TINY_TEXT_CONFIG if args.tiny else FULL_SIZE_TEXT_CONFIG
    bench = Bench(device, text, layers=8 if device.type == "cuda" else 1)
    measure, default_sizes = FAMILIES[args.family]
    torch.manual_seed(0)
    sizes = [int(size) for size in (args.sizes or default_sizes).split(",") if size]
    out = args.out or Path(f"bench-out/check-{args.family}.json")
    write_rows(out, device, sizes, measure(bench, args.sweep))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
