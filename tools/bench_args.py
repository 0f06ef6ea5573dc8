"""Command-line options of `travelbot bench` and `travelbot check-fp8` (no torch import, so
`travelbot --help` is fast and the bot package imports no torch through them)."""

from __future__ import annotations

import argparse
from pathlib import Path

from inference.runtime.config import RuntimeConfig

DEFAULTS = RuntimeConfig()  # the engine's own defaults (no torch import)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Which model (one of three), on which device, with how many soft tokens a photo."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="a Gemma 4 checkpoint directory")
    source.add_argument("--tiny", action="store_true", help="the tiny random checkpoint (CPU)")
    source.add_argument(
        "--full-size-random",
        action="store_true",
        help="26B-A4B architecture, random weights, built on the device",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--image-soft-tokens", type=int, default=280)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--experts-implementation", default=None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--generate-batches", type=_ints, default=[1, 8, 32])
    parser.add_argument(
        "--generate-caches", type=lambda t: t.split(","), default=["default", "static"]
    )
    parser.add_argument("--static-max-batch", type=int, default=8)
    parser.add_argument("--engine-concurrency", type=_ints, default=[1, 8, 64])
    parser.add_argument(
        "--worker-concurrency",
        type=_ints,
        default=[1, 8, 64],
        help="then these bursts through the Worker as the bot sends them: a fresh 1280x960 "
        "JPEG each, normalized and prepared on the clock ('': none)",
    )
    parser.add_argument(
        "--prompt-lengths",
        choices=("gemma-estimate", "tokenizer"),
        default="gemma-estimate",
        help="gemma-estimate: each prompt as long as Gemma 4's tokenizer would make it, "
        "whatever tokenizer is loaded (tools/bench_prompts.py); tokenizer: as the loaded one "
        "makes them (the bench before this option: to compare with its JSON)",
    )
    parser.add_argument("--poisson-rate", type=float, default=16.0)
    parser.add_argument(
        "--closed-loop-rounds",
        type=int,
        default=3,
        help="then N photos per client, each sent when the previous answer is done (0: off)",
    )
    parser.add_argument("--max-slots", type=int, default=DEFAULTS.max_slots)
    parser.add_argument("--max-seq-len", type=int, default=DEFAULTS.max_seq_len)
    parser.add_argument(
        "--max-prefill-seqs",
        type=int,
        default=DEFAULTS.max_prefill_seqs,
        help="prompts per prefill",
    )
    parser.add_argument(
        "--deep-queue-prefill-seqs",
        type=int,
        default=DEFAULTS.deep_queue_prefill_seqs,
        help="... when more than --max-prefill-seqs wait",
    )
    parser.add_argument(
        "--sweep-prefill-seqs",
        type=_ints,
        default=[],
        help="then the bursts again with each of these prompts-per-prefill limits",
    )
    parser.add_argument(
        "--prefix-cache-tokens",
        type=int,
        default=DEFAULTS.prefix_cache_tokens,
        help="KV of shared prompt prefixes kept, in positions (0: off)",
    )
    parser.add_argument(
        "--without-prefix-cache",
        type=_ints,
        default=None,
        help="then these bursts again with the prefix cache off, as the same run's baseline "
        "(default: the engine concurrencies above 1)",
    )
    parser.add_argument(
        "--long-context",
        type=_ints,
        default=None,
        help="then these bursts of follow-ups whose conversations fill --max-seq-len (a "
        "photo, three answers and this turn's photo; the peak memory target's 4k context; "
        "default: the largest engine concurrency)",
    )
    parser.add_argument(
        "--fp8-experts",
        type=_ints,
        default=[],
        help="then these bursts with the expert weights quantized to FP8 in place (the bf16 "
        "weights wait on the CPU and come back for the generate() rows)",
    )
    parser.add_argument(
        "--fp8-kv-cache",
        type=_ints,
        default=[],
        help="then these bursts with the sliding layers' keys and values in FP8 (and, with "
        "--fp8-experts, its bursts again with both)",
    )
    parser.add_argument("--cuda-graphs", choices=("auto", "on", "off"), default="auto")
    parser.add_argument(
        "--compile-layers",
        choices=("auto", "on", "off"),
        default="auto",
        help="torch.compile the decoder layers' regions (auto: on a GPU)",
    )
    parser.add_argument(
        "--no-overlap",
        action="store_true",
        help="read each step's tokens back before launching the next (the old engine loop)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out/bench.json"))


def add_fp8_check_arguments(parser: argparse.ArgumentParser) -> None:
    """`travelbot check-fp8` (tools.fp8_check; random weights, tiny or full size, test
    its run, not the quality of FP8 answers)."""
    add_model_arguments(parser)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument(
        "--kv-cache", action="store_true", help="FP8 keys and values too (TRAVELBOT_FP8_KV_CACHE)"
    )
    parser.add_argument("--max-mean-kl", type=float, default=0.01, help="nats (exit 1 above)")
    parser.add_argument(
        "--min-agreement", type=float, default=0.97, help="top-token share (exit 1 below)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench-out/fp8-check.json"))
