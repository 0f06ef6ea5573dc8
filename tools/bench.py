"""`travelbot bench`: transformers' generate() baselines and the batching engine, in one run.

Every request is a realistic photo (a sign or a menu, 1024x768) with the explain-the-photo
task; decode length is forced, so random weights cost what real ones do. Prints a table
and writes JSON with output tok/s, images/s, time to first token, decode step, peak memory
and the engine's ratios against every generate() row. The engine is timed from outside:
its serving loop keeps nothing for the bench (tools/bench_rows.py).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch._dynamo.utils import counters as dynamo_counters

from inference.engine import EngineConfig, GemmaEngine
from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import EnginePaths, RuntimeConfig
from inference.runtime.gemma4 import fp8_experts
from inference.types import Request
from tools.bench_prompts import CHARS_PER_TOKEN, PromptFitter, length_stats
from tools.bench_requests import (
    LANGUAGES,
    long_context_requests,
    make_requests,
    photo_request,
)
from tools.bench_rows import (
    GpuTimer,
    Row,
    bench_closed_loop,
    bench_engine,
    bench_generate,
    reset_peak,
    synchronize,
)
from tools.bench_worker import phone_photos, worker_rows

# what tools/ (profile_decode, greedy_tokens, fp8_check) and scripts/ take from here
__all__ = [
    "GpuTimer",
    "full_size_random_engine",
    "load_engine",
    "make_requests",
    "synchronize",
    "write",
]


# -- model ------------------------------------------------------------------------------------
def full_size_random_engine(device: str, image_soft_tokens: int) -> GemmaEngine:
    """Gemma 4 26B-A4B's architecture with random bf16 weights, built on the device."""
    from transformers import Gemma4ForConditionalGeneration, Gemma4ImageProcessorPil

    from tools.tiny import (
        FULL_SIZE_TEXT_CONFIG,
        FULL_SIZE_VISION_CONFIG,
        build_config,
        build_tokenizer,
    )

    tokenizer = build_tokenizer()
    config = build_config(tokenizer, text=FULL_SIZE_TEXT_CONFIG, vision=FULL_SIZE_VISION_CONFIG)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = Gemma4ForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(default_dtype)
    processor = Gemma4ImageProcessorPil(max_soft_tokens=image_soft_tokens)
    return GemmaEngine(model, tokenizer, processor, image_soft_tokens=image_soft_tokens)


def load_engine(args: argparse.Namespace) -> GemmaEngine:
    if args.full_size_random:
        engine = full_size_random_engine(args.device, args.image_soft_tokens)
        if args.experts_implementation:
            engine.model.set_experts_implementation(args.experts_implementation)
        return engine
    if args.tiny:
        from tools.tiny import write_tiny_checkpoint

        model_dir = write_tiny_checkpoint(tempfile.mkdtemp(prefix="tiny-gemma4-"))
    else:
        model_dir = args.model
    config = EngineConfig(
        model_path=model_dir,
        device=args.device,
        image_soft_tokens=args.image_soft_tokens,
        experts_implementation=args.experts_implementation,
    )
    return GemmaEngine.load(config)


def poisson_arrivals(count: int, rate: float, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    now, times = 0.0, []
    for _ in range(count):
        times.append(now)
        now += rng.expovariate(rate)
    return times


def release(device: torch.device, runner: weakref.ref) -> bool:
    """After an engine is closed and its last reference dropped: free what it held before
    the next rows measure their peak memory; whether its runner (`runner`) is gone."""
    gc.collect()  # it may sit in reference cycles until the collector runs
    reset_peak(device)
    return runner() is None


# -- the run -----------------------------------------------------------------------------------
def runtime_config(args: argparse.Namespace) -> RuntimeConfig:
    return RuntimeConfig(
        max_slots=args.max_slots,
        max_seq_len=args.max_seq_len,
        max_prefill_seqs=args.max_prefill_seqs,
        deep_queue_prefill_seqs=max(args.max_prefill_seqs, args.deep_queue_prefill_seqs),
        cuda_graphs=None if args.cuda_graphs == "auto" else args.cuda_graphs == "on",
        compile_layers=None if args.compile_layers == "auto" else args.compile_layers == "on",
        prefix_cache_tokens=args.prefix_cache_tokens,
    )


def with_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """The row lists left to their defaults, from the engine concurrencies."""
    many = [c for c in args.engine_concurrency if c > 1]
    if args.without_prefix_cache is None:
        args.without_prefix_cache = many if args.prefix_cache_tokens else []
    if args.long_context is None:
        args.long_context = [max(args.engine_concurrency)] if args.engine_concurrency else []
    return args


class Bench:
    """One run: the model, its requests, the rows so far and the JSON they make.

    Engine rows first (then the variants: other prefill limits, no prefix cache, FP8 keys
    and values, FP8 experts quantized in place and given back after), each on an engine
    of its own settings; then the generate() rows (the static cache's compile last, after
    torch.compile's caches are cleared). The JSON is rewritten after every row, so a run
    cut short still leaves its numbers."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args = with_defaults(args)
        self.base = load_engine(args)
        self.device = self.base.device
        count = max([*args.generate_batches, *args.engine_concurrency,
                     *args.without_prefix_cache, *args.fp8_experts, *args.fp8_kv_cache,
                     *args.long_context, 1])  # fmt: skip
        self.plain = make_requests(count, args.new_tokens)  # prompts as the bot's are
        self.shapes = None  # the prompts' messages fitted per language (bench_prompts)
        if args.prompt_lengths == "gemma-estimate":
            fitter = PromptFitter(self.base, self.plain[0].images[0])
            self.shapes = {language: fitter.shape(language) for language in LANGUAGES}
        self.requests = [self.fitted(request) for request in self.plain]
        self.fresh_seed = count  # photos not seen yet are drawn from here on
        self.runtime = runtime_config(args)
        device = self.device
        self.result = {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "model": "full-size random" if args.full_size_random else str(args.model or "tiny"),
            "new_tokens": args.new_tokens,
            "image_soft_tokens": self.base.image_soft_tokens,
            **self.prompt_lengths(),
            "runtime": asdict(self.runtime),
            "rows": [],
        }
        self.rows: list[Row] = []
        # the kept prefix fitted to the fitted system prompt, as the engine fits its own
        shared = self.result["shared_prefix_tokens"]
        self.paths = EnginePaths(overlap_steps=not args.no_overlap, kept_prefix_positions=shared)

    def fitted(self, request: Request) -> Request:
        """`request` with its prompt as long as --prompt-lengths says."""
        return self.shapes[request.language].request(request) if self.shapes else request

    def prompt_lengths(self) -> dict:
        """The requests' prompt lengths in tokens, so a before/after can check that it
        compared like with like."""
        prepared = [self.base.prepare_with_prefix(request) for request in self.requests]
        tokens = [int(inputs["input_ids"].shape[1]) for inputs, _ in prepared]
        return {
            "prompt_tokens": tokens[0],
            "shared_prefix_tokens": len(prepared[0][1]),
            "prompt_lengths": {
                "fitted_to": self.args.prompt_lengths,
                "chars_per_token": CHARS_PER_TOKEN if self.shapes else None,
                **length_stats(tokens),
            },
        }

    def next_seed(self, count: int) -> int:
        """The first seed of `count` photos not drawn yet."""
        self.fresh_seed += count
        return self.fresh_seed - count

    def fresh_requests(self, count: int) -> list[Request]:
        plain = make_requests(count, self.args.new_tokens, seed=self.next_seed(count))
        return [self.fitted(request) for request in plain]

    def worker_request(self, index: int, photo: bytes, owner: str) -> Request:
        """The bench's request for a photo the Worker rows normalized on the clock."""
        return self.fitted(photo_request(index, photo, self.args.new_tokens, owner=owner))

    def record(self, row: Row) -> None:
        self.rows.append(row)
        print_row(row)
        self.result["rows"] = [asdict(r) for r in self.rows]
        self.result["ratios"] = ratios(self.rows)
        self.result["targets"] = targets(self.rows)
        write(self.args.out, self.result)

    def run(self) -> dict:
        args = self.args
        if args.engine_concurrency or args.long_context:
            self.on_engine(self.runtime, "engine_setup_seconds", "closed_engine_released",
                           self.default_rows)  # fmt: skip
        self.variant_rows()
        self.generate_rows()
        return self.result

    def on_engine(self, runtime: RuntimeConfig, setup_key: str, released_key: str,
                  rows: Callable[[BatchEngine], None]) -> None:  # fmt: skip
        """An engine with `runtime` (its set-up timed), `rows` run on it, then closed and
        freed before the next rows measure their peak memory (a reference left to any part
        of it, e.g. its scheduler, which asks the runner about cached prefixes, would keep
        ~20 GiB): whether it was, as `released_key`."""
        setup_started = time.perf_counter()
        engine = BatchEngine(self.base, runtime, self.paths)
        self.result[setup_key] = round(time.perf_counter() - setup_started, 1)
        # the system prompt's KV cached, as it is by the time travellers come
        warm_up = [self.fitted(r) for r in make_requests(2, 4, seed=99)]
        bench_engine(engine, warm_up, [0.0, 0.0], "warm-up")
        rows(engine)
        runner = weakref.ref(engine.runner)
        engine.close()
        del engine
        self.result[released_key] = release(self.device, runner)

    def default_rows(self, engine: BatchEngine) -> None:
        """The rows on an engine with the run's settings, and what it compiled meanwhile."""
        experts = engine.patch.experts  # 0 and False where a kernel's check failed
        self.result["fused_experts_max_tokens"] = experts.fused_max_tokens
        self.result["expert_major_max_tokens"] = experts.expert_major_max_tokens
        self.result["triton_prompt_experts"] = experts.prompt_is_triton
        self.result["graph_breaks"] = dict(dynamo_counters["graph_break"])
        graphs_after_setup = dynamo_counters["stats"]["unique_graphs"]
        triton_after_setup = triton_kernels_compiled()
        self.burst_rows(engine)
        if self.args.worker_concurrency:
            bursts = [phone_photos(c, seed=self.next_seed(c)) for c in self.args.worker_concurrency]
            worker_rows(engine, bursts, self.worker_request, self.record)
        self.long_context_rows(engine)
        self.result["prefix_cache"] = engine.runner.prefixes.stats()
        # compiled regions that had to be built while serving (0: the warm-up covered all)
        graphs_now = dynamo_counters["stats"]["unique_graphs"]
        self.result["recompiles_while_serving"] = graphs_now - graphs_after_setup
        # the same for the project's Triton kernels (a new pattern of int arguments compiles)
        triton_now = triton_kernels_compiled()
        if triton_now is not None and triton_after_setup is not None:
            self.result["triton_compiles_while_serving"] = triton_now - triton_after_setup
        write(self.args.out, self.result)

    def burst_rows(self, engine: BatchEngine) -> None:
        """Each concurrency at once; then as Poisson arrivals; then as a closed loop (its
        later rounds new photos, which the photo cache has not seen)."""
        args = self.args
        for concurrency in args.engine_concurrency:
            chosen = self.requests[:concurrency]
            self.record(bench_engine(engine, chosen, [0.0] * concurrency, "engine, together"))
            if args.poisson_rate and concurrency > 1:
                arrivals = poisson_arrivals(concurrency, args.poisson_rate)
                name = f"engine, Poisson {args.poisson_rate}/s"
                self.record(bench_engine(engine, chosen, arrivals, name))
            if args.closed_loop_rounds and concurrency > 1:
                later = [self.fresh_requests(concurrency)
                         for _ in range(args.closed_loop_rounds - 1)]  # fmt: skip
                self.record(bench_closed_loop(engine, [chosen, *later]))

    def long_context_rows(self, engine: BatchEngine) -> None:
        """Follow-ups whose conversations fill the context, the prompts fitted as the
        others are (each one's earlier photo is another's photo of the row)."""
        max_seq_len = self.args.max_seq_len
        for concurrency in self.args.long_context:
            chosen = self.plain[:concurrency]
            long = long_context_requests(self.base, chosen, max_seq_len, self.fitted)
            row = bench_engine(engine, long, [0.0] * concurrency, "engine, long context")
            row.extra["context_tokens"] = max_seq_len
            self.record(row)

    def bursts(self, name: str, concurrencies: list[int], **changes) -> None:
        """These bursts on an engine of the run's settings with `changes`."""

        def rows(engine: BatchEngine) -> None:
            for concurrency in concurrencies:
                chosen = self.requests[:concurrency]
                self.record(bench_engine(engine, chosen, [0.0] * concurrency, f"engine, {name}"))

        self.on_engine(replace(self.runtime, **changes), f"{name} setup_seconds",
                       f"{name} engine released", rows)  # fmt: skip

    def variant_rows(self) -> None:
        args = self.args
        many = [c for c in args.engine_concurrency if c > 1]
        for prompts in args.sweep_prefill_seqs:  # prompts per prefill, bursts only
            self.bursts(f"together, prefill ≤{prompts}", many, max_prefill_seqs=prompts,
                        deep_queue_prefill_seqs=prompts)  # fmt: skip
        if args.without_prefix_cache:  # every prompt prefilled whole: the cache's baseline
            self.bursts("no prefix cache", args.without_prefix_cache, prefix_cache_tokens=0)
        if args.fp8_kv_cache:
            self.bursts("fp8 kv cache", args.fp8_kv_cache, fp8_kv_cache=True)
        if args.fp8_experts:  # quantized in place; the bf16 weights back for generate() after
            model = self.base.model
            bf16_experts = fp8_experts.experts_on_cpu(model) if args.generate_batches else None
            self.bursts("fp8 experts", args.fp8_experts, fp8_experts=True)
            if args.fp8_kv_cache:
                self.bursts("fp8 experts and kv cache", args.fp8_experts, fp8_experts=True,
                            fp8_kv_cache=True)  # fmt: skip
            if bf16_experts is not None:
                fp8_experts.restore_experts(model, bf16_experts)
                del bf16_experts
                reset_peak(self.device)  # the FP8 values freed
        self.result["generate_on_bf16_experts"] = not fp8_experts.any_quantized(self.base.model)

    def generate_rows(self) -> None:
        args = self.args
        if args.generate_batches:
            # generate()'s static cache compiles its decode step: with the engines' compiled
            # regions still in torch.compile's caches it ran far slower (docs/performance.md)
            torch._dynamo.reset()
        for cache in args.generate_caches:
            for batch in args.generate_batches:
                if cache == "static" and batch > args.static_max_batch:
                    continue
                self.record(bench_generate(self.base, self.requests[:batch], cache,
                                           args.new_tokens))  # fmt: skip


def run(args: argparse.Namespace) -> dict:
    return Bench(args).run()


def triton_kernels_compiled() -> int | None:
    """Compiled variants the project's Triton kernels hold; None where Triton (or its cache
    layout, `JITFunction.device_caches`) is not there."""
    try:
        from triton.runtime.jit import JITFunction

        from inference.runtime.kernels import decode_attention, moe, moe_prompt, prompt_attention
    except ImportError:
        return None
    total = 0
    for module in (decode_attention, moe, moe_prompt, prompt_attention):
        for kernel in vars(module).values():
            if isinstance(kernel, JITFunction):
                caches = getattr(kernel, "device_caches", None)
                if caches is None:
                    return None
                total += sum(len(entry[0]) for entry in caches.values())
    return total


def write(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")


# the targets (one H100): (what, row name, concurrency, field, bound, at most?)
TARGETS = (
    ("64 at once: output tok/s", "engine, together", 64, "tok_per_s", 2500.0, False),
    ("1 request: decode step ms", "engine, together", 1, "decode_step_ms", 6.0, True),
    ("8 at once: decode step ms", "engine, together", 8, "decode_step_ms", 12.0, True),
    ("8 at once: TTFT p50 ms", "engine, together", 8, "ttft_p50_ms", 300.0, True),
    ("64 at once: peak GiB", "engine, together", 64, "peak_memory_gib", 75.0, True),
    ("64 at 4k context: peak GiB", "engine, long context", 64, "peak_memory_gib", 75.0, True),
)


def targets(rows: list[Row]) -> dict:
    """Each target the run has a row for: the value, the bound, whether it is met."""
    out = {}
    for what, name, concurrency, field_name, bound, at_most in TARGETS:
        row = next((r for r in rows if (r.name, r.concurrency) == (name, concurrency)), None)
        value = getattr(row, field_name) if row is not None and not row.error else None
        if value is not None:
            met = value <= bound if at_most else value >= bound
            out[what] = {"value": value, "bound": bound, "at_most": at_most, "met": met}
    return out


def ratios(rows: list[Row]) -> dict:
    """Engine and Worker tok/s over every generate() row's tok/s; "worker/engine": the
    Worker's tok/s over the engine's alone at each concurrency."""
    baselines = [r for r in rows if r.name.startswith("generate") and r.tok_per_s]
    out: dict = {}
    engine = {r.concurrency: r for r in rows if r.name == "engine, together" and r.tok_per_s}
    worker = {r.concurrency: r for r in rows if r.name == "worker, together" and r.tok_per_s}
    if engine.keys() & worker.keys():
        out["worker/engine"] = {
            f"x{c}": round(worker[c].tok_per_s / engine[c].tok_per_s, 3)
            for c in sorted(engine.keys() & worker.keys())
        }
    for row in rows:
        if row.name.startswith(("engine", "worker")) and row.tok_per_s:
            key = f"{row.name} x{row.concurrency}"
            out[key] = {
                f"{base.name} x{base.concurrency}": round(row.tok_per_s / base.tok_per_s, 2)
                for base in baselines
            }
    return out


HEADER = (
    f"{'row':<28} {'conc':>5} {'tok/s':>9} {'img/s':>7} {'ttft p50':>9} {'ttft p95':>9} "
    f"{'step ms':>8} {'peak GiB':>9}"
)


def print_row(row: Row) -> None:
    if row.error:
        print(f"{row.name:<28} {row.concurrency:>5}  {row.error}", flush=True)
        return
    print(
        f"{row.name:<28} {row.concurrency:>5} {row.tok_per_s:>9.1f} {row.images_per_s:>7.2f} "
        f"{_ms(row.ttft_p50_ms)} {_ms(row.ttft_p95_ms)} {row.decode_step_ms:>8.2f} "
        f"{row.peak_memory_gib:>9.2f}",
        flush=True,
    )


def _ms(value: float | None) -> str:
    return f"{value:>9.1f}" if value is not None else f"{'n/a':>9}"


def print_table(result: dict) -> None:
    lengths = result["prompt_lengths"]
    print(
        f"\n{result['model']} on {result['device']}, prompts of {lengths['min']}-"
        f"{lengths['max']} tokens (median {lengths['median']}; fitted to "
        f"{lengths['fitted_to']}; {result['shared_prefix_tokens']} shared, "
        f"{result['image_soft_tokens']} image soft tokens at most), "
        f"{result['new_tokens']} new tokens"
    )
    print(HEADER)
    for row in result["rows"]:
        print_row(Row(**row))
    for what, target in result.get("targets", {}).items():
        sign = "≤" if target["at_most"] else "≥"
        print(f"target {what}: {target['value']} ({sign} {target['bound']}: "
              f"{'met' if target['met'] else 'missed'})")  # fmt: skip
    for name, against in result["ratios"].items():
        print(f"{name}: " + ", ".join(f"{v}x {k}" for k, v in against.items()))


def main(args: argparse.Namespace) -> int:
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    result = run(args)
    write(args.out, result)
    print_table(result)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":  # python -m tools.bench (where the bot's packages are absent)
    from tools.bench_args import add_arguments

    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
