"""`travelbot bench`: transformers' generate() baselines and the batching engine, in one run.

Every request is a realistic photo (a sign or a menu, 1024x768) with the explain-the-photo
task; decode length is forced, so random weights cost what real ones do. Prints a table
and writes JSON with output tok/s, images/s, time to first token, decode step, peak memory
and the engine's ratios against every generate() row.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import math
import random
import statistics
import tempfile
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch._dynamo.utils import counters as dynamo_counters

from inference.engine import EngineConfig, GemmaEngine
from inference.images import normalize_image
from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import EnginePaths, RuntimeConfig
from inference.runtime.gemma4 import fp8_experts
from inference.types import Finished, Request, Sampling, Turn
from tools.samples import draw_menu, draw_sign

LANGUAGES = ("de", "en", "fr", "ja", "es", "ko", "it", "zh")
PREP_THREADS = 4


@dataclass
class Row:
    name: str
    concurrency: int
    output_tokens: int = 0
    seconds: float = 0.0
    tok_per_s: float = 0.0
    images_per_s: float = 0.0
    ttft_p50_ms: float = 0.0
    ttft_p95_ms: float = 0.0
    decode_step_ms: float = 0.0
    peak_memory_gib: float = 0.0
    error: str | None = None
    extra: dict = field(default_factory=dict)


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


def make_requests(count: int, new_tokens: int, *, seed: int = 0) -> list[Request]:
    requests = []
    for index in range(count):
        draw = draw_sign if index % 2 == 0 else draw_menu
        image = draw(1024, 768, seed=seed + index)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        requests.append(
            Request(
                language=LANGUAGES[index % len(LANGUAGES)],
                images=(normalize_image(buffer.getvalue()),),
                max_new_tokens=new_tokens,
                ignore_stop=True,
                sampling=Sampling(temperature=0.0),
            )
        )
    return requests


FILLER = (
    "{n}. Grilled fish with lemon and herbs, served with potatoes: no pork, no gluten; ask "
    "for the sauce apart if you avoid dairy. "
)


def long_context_requests(
    engine: GemmaEngine, requests: list[Request], context_tokens: int
) -> list[Request]:
    """Each request as the follow-up of a conversation that fills `context_tokens` with its
    answer: an earlier photo, three long answers and two questions before this turn's
    photo (the bot keeps six earlier turns). The answers' length is found with request 0."""

    def follow_up(request: Request, earlier: Request, units: int) -> Request:
        third = [FILLER.format(n=n) for n in range(units)]
        answers = ["".join(third[i::3]) for i in range(3)]
        history = (
            Turn("user", "What does this say?", earlier.images),
            Turn("model", answers[0]),
            Turn("user", "Which of these has no pork?"),
            Turn("model", answers[1]),
            Turn("user", "And which are vegetarian?"),
            Turn("model", answers[2]),
        )
        return replace(request, history=history)

    def tokens(units: int) -> int:
        request = follow_up(requests[0], requests[-1], units)
        return int(engine.prepare_inputs(request, on_device=False)["input_ids"].shape[1])

    target = context_tokens - requests[0].max_new_tokens - 16  # room for the languages
    base = tokens(0)
    per_unit = (tokens(8) - base) / 8
    units = max(0, int((target - base) / per_unit))
    while units and tokens(units) > target:
        units -= 1
    count = len(requests)
    return [follow_up(r, requests[(i + 1) % count], units) for i, r in enumerate(requests)]


# -- timing helpers ----------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def release(device: torch.device, runner: weakref.ref) -> bool:
    """After an engine is closed and its last reference dropped: free what it held before
    the next rows measure their peak memory; whether its runner (`runner`) is gone."""
    gc.collect()  # it may sit in reference cycles until the collector runs
    reset_peak(device)
    return runner() is None


def peak_gib(device: torch.device) -> float:
    if device.type != "cuda":
        return 0.0
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


def alloc_retries(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    return int(torch.cuda.memory_stats(device).get("num_alloc_retries", 0))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# -- generate() baselines ----------------------------------------------------------------------
def batch_inputs(engine: GemmaEngine, requests: list[Request]) -> dict:
    """Left-padded batch for generate()."""
    items = [engine.prepare_inputs(request) for request in requests]
    width = max(item["input_ids"].shape[1] for item in items)
    pad = engine.tokenizer.pad_token_id

    def left_pad(key: str, value: int) -> torch.Tensor:
        rows = []
        for item in items:
            row = item.get(key, torch.zeros_like(item["input_ids"]))[0]
            filler = torch.full((width - row.shape[0],), value, dtype=row.dtype, device=row.device)
            rows.append(torch.cat([filler, row]))
        return torch.stack(rows)

    batch = {
        "input_ids": left_pad("input_ids", pad),
        "attention_mask": left_pad("attention_mask", 0),
        "mm_token_type_ids": left_pad("mm_token_type_ids", 0),
        "pixel_values": torch.cat([item["pixel_values"] for item in items]),
        "image_position_ids": torch.cat([item["image_position_ids"] for item in items]),
    }
    return batch


def bench_generate(
    engine: GemmaEngine, requests: list[Request], cache: str, new_tokens: int
) -> Row:
    row = Row(name=f"generate() {cache} cache", concurrency=len(requests))
    device = engine.device
    inputs = batch_inputs(engine, requests)
    kwargs = dict(engine.generation_kwargs, do_sample=False)
    if cache == "static":
        kwargs["cache_implementation"] = "static"

    def run(tokens: int) -> float:
        synchronize(device)
        started = time.perf_counter()
        with torch.inference_mode():
            engine.model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, **kwargs)
        synchronize(device)
        return time.perf_counter() - started

    reset_peak(device)
    try:
        run(new_tokens if cache == "static" else 2)  # warm-up (static: compiles the decode)
        first = run(1)
        total = run(new_tokens)
    except torch.OutOfMemoryError as exc:
        row.error = f"out of memory: {exc}"[:200]
        return row
    row.output_tokens = len(requests) * new_tokens
    row.seconds = round(total, 3)
    row.tok_per_s = round(row.output_tokens / total, 1)
    row.images_per_s = round(len(requests) / total, 2)
    row.ttft_p50_ms = row.ttft_p95_ms = round(first * 1000, 1)
    step = (total - first) / max(1, new_tokens - 1)
    if step <= 0:  # a few tokens of a tiny model: the runs' noise is larger than decode
        row.extra["decode_step"] = "below the noise of separate runs"
    row.decode_step_ms = round(max(step, 0.0) * 1000, 2)
    row.peak_memory_gib = peak_gib(device)
    return row


# -- the batching engine -----------------------------------------------------------------------
@dataclass
class _Tracked:
    arrival: float | None = None  # None: not sent yet
    first_token: float | None = None
    done: float | None = None
    tokens: int = 0


def bench_engine(
    engine: BatchEngine,
    requests: list[Request],
    arrivals: list[float | None],
    name: str,
    *,
    concurrency: int | None = None,
    follow_up: dict[int, int] | None = None,
    photo_cache: bool = False,
) -> Row:
    """Feed requests at their arrival offsets (seconds), step until all finish. A request
    whose arrival is None is sent when the one naming it in `follow_up` finishes (a closed
    loop: each client sends its next photo as soon as its answer is complete). The rows
    reuse photos, which travellers would not: the photo cache starts empty and, unless
    `photo_cache` (follow-ups, whose earlier photos it is for), keeps none."""
    concurrency = concurrency or len(requests)
    follow_up = follow_up or {}
    row = Row(name=name, concurrency=concurrency)
    device = engine.base.device
    if device.type == "cuda":  # the allocator keeps its cache, as it does while serving
        torch.cuda.reset_peak_memory_stats(device)
    tracked = [_Tracked() for _ in requests]
    step_times: list[float] = []
    prefill_times: list[float] = []
    order = sorted((i for i, t in enumerate(arrivals) if t is not None), key=lambda i: arrivals[i])
    released: list[int] = []  # follow-ups due now
    photos, budget = engine.runner.photos, engine.runner.photos.max_bytes
    photos.clear()
    photos.max_bytes = budget if photo_cache else 0
    with ThreadPoolExecutor(PREP_THREADS) as pool:  # as the worker does, before arrival
        prepared = list(pool.map(engine.prepare, requests))
    seq_index = {id(seq): index for index, seq in enumerate(prepared)}
    prompt_tokens = [seq.num_prompt_tokens for seq in prepared]
    retries_before = alloc_retries(device)
    pauses = GcPauses()
    prefill_gpu = GpuTimer()  # tells a prefill's GPU work from its step's CPU side
    if device.type == "cuda":
        engine.runner.prefill = prefill_gpu.wrap("prefill", engine.runner.prefill)
    started = time.perf_counter()

    def emitter(index: int):
        def emit(event) -> None:
            if isinstance(event, Finished):
                state = tracked[index]
                state.done, state.tokens = time.perf_counter() - started, event.num_output_tokens
                if index in follow_up:
                    released.append(follow_up[index])

        return emit

    def send(index: int, now: float) -> None:
        tracked[index].arrival = now
        engine.add(prepared[index], emitter(index), lambda: False)

    while order or released or engine.num_active:
        now = time.perf_counter() - started
        while order and arrivals[order[0]] <= now:
            send(order.pop(0), now)
        while released:
            send(released.pop(0), now)
        if not engine.num_active:
            time.sleep(max(0.0, arrivals[order[0]] - now))
            continue
        step_started = time.perf_counter()
        engine.step()
        step_seconds = time.perf_counter() - step_started
        plan = engine.last_plan
        if plan.prefill:
            prefill_times.append(step_seconds)
        elif len(plan.decode) == concurrency:
            step_times.append(step_seconds)
        for seq in plan.first_tokens:  # read back on the CPU (and emitted) in this step
            tracked[seq_index[id(seq)]].first_token = seq.first_token_at - started
    pauses.stop()
    engine.runner.__dict__.pop("prefill", None)
    row.extra["photo_cache"] = photos.stats()
    photos.max_bytes = budget
    wall = max(state.done for state in tracked) - min(state.arrival for state in tracked)
    first_tokens = [(state.first_token - state.arrival) * 1000 for state in tracked]
    row.output_tokens = sum(state.tokens for state in tracked)
    row.seconds = round(wall, 3)
    row.tok_per_s = round(row.output_tokens / wall, 1)
    row.images_per_s = round(len(requests) / wall, 2)
    row.ttft_p50_ms = round(statistics.median(first_tokens), 1)
    row.ttft_p95_ms = round(percentile(first_tokens, 0.95), 1)
    row.decode_step_ms = round(statistics.median(step_times) * 1000, 2) if step_times else 0.0
    row.peak_memory_gib = peak_gib(device)
    row.extra["requests"] = len(requests)
    row.extra["prompt_tokens_min_max"] = [min(prompt_tokens), max(prompt_tokens)]
    row.extra["full_batch_decode_steps"] = len(step_times)
    row.extra["first_step_ms"] = round(min(s.first_token for s in tracked) * 1000, 1)
    # a burst's two phases: until every request has its first token (prefills, with decode
    # steps between them), then the decode steps after the last prefill
    start, last_first = min(s.arrival for s in tracked), max(s.first_token for s in tracked)
    row.extra["until_last_first_token_s"] = round(last_first - start, 3)
    row.extra["after_last_first_token_s"] = round(wall - (last_first - start), 3)
    row.extra["prefill_steps"] = len(prefill_times)
    row.extra["prefill_step_ms_first_median"] = [
        round(prefill_times[0] * 1000, 1),
        round(statistics.median(prefill_times) * 1000, 1),
    ]
    # cudaFree + cudaMalloc when the caching allocator ran out: slow, and a sign of pressure
    row.extra["allocator_retries"] = alloc_retries(device) - retries_before
    row.extra["gc_pauses"] = pauses.summary()
    row.extra["prefill_gpu_ms"] = prefill_gpu.each()[:8]  # first ones, in order
    return row


class GpuTimer:
    """GPU time of wrapped calls, from CUDA events (no sync until read)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            result = fn(*args, **kwargs)
            end.record()
            self.events.append((name, start, end))
            return result

        return timed

    def each(self) -> list[float]:
        """Milliseconds of every call, in order."""
        if self.events:
            torch.cuda.synchronize()
        return [round(start.elapsed_time(end), 1) for _, start, end in self.events]

    def totals(self) -> dict[str, float]:
        """Milliseconds per name, summed."""
        out: dict[str, float] = {}
        for (name, _, _), ms in zip(self.events, self.each(), strict=True):
            out[name] = round(out.get(name, 0.0) + ms, 2)
        return out


class GcPauses:
    """Python's garbage collections while a row runs: they stop the engine thread."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []  # (generation, seconds)
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def stop(self) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict:
        full = [seconds for generation, seconds in self.pauses if generation == 2]
        return {
            "collections": len(self.pauses),
            "total_ms": round(sum(seconds for _, seconds in self.pauses) * 1000, 1),
            "full_collections": len(full),
            "longest_ms": round(max((s for _, s in self.pauses), default=0.0) * 1000, 1),
        }


def bench_closed_loop(engine: BatchEngine, requests: list[Request], rounds: int) -> Row:
    """len(requests) clients, each sending `rounds` photos one after another (the next as
    soon as the previous answer is complete): the engine under a steady load."""
    clients = len(requests)
    arrivals: list[float | None] = [0.0] * clients + [None] * (clients * (rounds - 1))
    follow_up = {index: index + clients for index in range(clients * (rounds - 1))}
    name = f"engine, closed loop x{rounds}"
    return bench_engine(
        engine, requests * rounds, arrivals, name, concurrency=clients, follow_up=follow_up
    )


def poisson_arrivals(count: int, rate: float, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    now, times = 0.0, []
    for _ in range(count):
        times.append(now)
        now += rng.expovariate(rate)
    return times


# -- the run -----------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    """Engine rows first (then those with FP8 keys and values and with FP8 experts: the
    experts quantized in place and given back after), then the generate() rows (the
    static cache's compile last, after torch.compile's caches are cleared); the JSON is
    rewritten after every row, so a run cut short still leaves its numbers."""
    base = load_engine(args)
    device = base.device
    without_cache = args.without_prefix_cache
    if without_cache is None:
        without_cache = [c for c in args.engine_concurrency if c > 1]
    if args.long_context is None:
        args.long_context = [max(args.engine_concurrency)] if args.engine_concurrency else []
    count = max(
        [
            *args.generate_batches,
            *args.engine_concurrency,
            *without_cache,
            *args.fp8_experts,
            *args.fp8_kv_cache,
            *args.long_context,
        ]
    )
    requests = make_requests(count, args.new_tokens)
    runtime = RuntimeConfig(
        max_slots=args.max_slots,
        max_seq_len=args.max_seq_len,
        max_prefill_seqs=args.max_prefill_seqs,
        deep_queue_prefill_seqs=max(args.max_prefill_seqs, args.deep_queue_prefill_seqs),
        cuda_graphs=None if args.cuda_graphs == "auto" else args.cuda_graphs == "on",
        compile_layers=None if args.compile_layers == "auto" else args.compile_layers == "on",
        prefix_cache_tokens=args.prefix_cache_tokens,
    )
    paths = EnginePaths(overlap_steps=not args.no_overlap)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": "full-size random" if args.full_size_random else str(args.model or "tiny"),
        "new_tokens": args.new_tokens,
        "image_soft_tokens": base.image_soft_tokens,
        "prompt_tokens": int(base.prepare_inputs(requests[0])["input_ids"].shape[1]),
        "shared_prefix_tokens": len(base.prepare_with_prefix(requests[0])[1]),
        "runtime": asdict(runtime),
        "rows": [],
    }
    rows: list[Row] = []

    def record(row: Row) -> None:
        rows.append(row)
        print_row(row)
        result["rows"] = [asdict(r) for r in rows]
        result["ratios"] = ratios(rows)
        result["targets"] = targets(rows)
        write(args.out, result)

    def on_engine(engine_runtime: RuntimeConfig, setup_key: str, released_key: str,
                  rows: Callable[[BatchEngine], None]) -> None:  # fmt: skip
        """An engine with `engine_runtime` (its set-up timed), `rows` run on it, then closed
        and freed before the next rows measure their peak memory (a reference left to any
        part of it, e.g. its scheduler, which asks the runner about cached prefixes, would
        keep ~20 GiB): whether it was, as `released_key`."""
        setup_started = time.perf_counter()
        engine = BatchEngine(base, engine_runtime, paths)
        result[setup_key] = round(time.perf_counter() - setup_started, 1)
        rows(engine)
        runner = weakref.ref(engine.runner)
        engine.close()
        del engine
        result[released_key] = release(device, runner)

    def default_engine_rows(engine: BatchEngine) -> None:
        """The rows on an engine with the run's settings."""
        experts = engine.patch.experts  # 0 and False where a kernel's check failed
        result["fused_experts_max_tokens"] = experts.fused_max_tokens
        result["expert_major_max_tokens"] = experts.expert_major_max_tokens
        result["triton_prompt_experts"] = experts.prompt_is_triton
        result["graph_breaks"] = dict(dynamo_counters["graph_break"])
        graphs_after_setup = dynamo_counters["stats"]["unique_graphs"]
        triton_after_setup = triton_kernels_compiled()
        bench_engine(engine, make_requests(2, 4, seed=99), [0.0, 0.0], "warm-up")
        for concurrency in args.engine_concurrency:
            chosen = requests[:concurrency]
            record(bench_engine(engine, chosen, [0.0] * concurrency, "engine, together"))
            if args.poisson_rate and concurrency > 1:
                arrivals = poisson_arrivals(concurrency, args.poisson_rate)
                name = f"engine, Poisson {args.poisson_rate}/s"
                record(bench_engine(engine, chosen, arrivals, name))
            if args.closed_loop_rounds and concurrency > 1:
                record(bench_closed_loop(engine, chosen, args.closed_loop_rounds))
        for concurrency in args.long_context:
            long = long_context_requests(base, requests[:concurrency], args.max_seq_len)
            row = bench_engine(engine, long, [0.0] * concurrency, "engine, long context",
                               photo_cache=True)  # fmt: skip
            row.extra["context_tokens"] = args.max_seq_len
            record(row)
        result["prefix_cache"] = engine.runner.prefixes.stats()
        if args.prefix_cache_tokens:
            engine.runner.prefixes.max_tokens = 0  # every prompt prefilled whole again
            for concurrency in without_cache:
                chosen, name = requests[:concurrency], "engine, no prefix cache"
                record(bench_engine(engine, chosen, [0.0] * concurrency, name))
            engine.runner.prefixes.max_tokens = args.prefix_cache_tokens
        for prompts in args.sweep_prefill_seqs:  # prompts per prefill, bursts only
            engine.scheduler.max_prefill_seqs = engine.scheduler.deep_queue_prefill_seqs = prompts
            for concurrency in args.engine_concurrency:
                if concurrency > 1:
                    chosen, name = requests[:concurrency], f"engine, together, prefill ≤{prompts}"
                    record(bench_engine(engine, chosen, [0.0] * concurrency, name))
        engine.scheduler.max_prefill_seqs = runtime.max_prefill_seqs
        engine.scheduler.deep_queue_prefill_seqs = runtime.deep_queue_prefill_seqs
        # compiled regions that had to be built while serving (0: the warm-up covered all)
        graphs_now = dynamo_counters["stats"]["unique_graphs"]
        result["recompiles_while_serving"] = graphs_now - graphs_after_setup
        # the same for the project's Triton kernels (a new pattern of int arguments compiles)
        triton_now = triton_kernels_compiled()
        if triton_now is not None and triton_after_setup is not None:
            result["triton_compiles_while_serving"] = triton_now - triton_after_setup
        write(args.out, result)

    if args.engine_concurrency or args.long_context or without_cache or args.sweep_prefill_seqs:
        on_engine(runtime, "engine_setup_seconds", "closed_engine_released", default_engine_rows)

    def variant_rows(name: str, concurrencies: list[int], **changes) -> None:
        """These bursts on an engine with other settings."""

        def rows(engine: BatchEngine) -> None:
            bench_engine(engine, make_requests(2, 4, seed=99), [0.0, 0.0], "warm-up")
            for concurrency in concurrencies:
                chosen = requests[:concurrency]
                record(bench_engine(engine, chosen, [0.0] * concurrency, f"engine, {name}"))

        on_engine(replace(runtime, **changes), f"{name} setup_seconds", f"{name} engine released",
                  rows)  # fmt: skip

    if args.fp8_kv_cache:
        variant_rows("fp8 kv cache", args.fp8_kv_cache, fp8_kv_cache=True)
    if args.fp8_experts:  # quantized in place; the bf16 weights back for generate() after
        bf16_experts = fp8_experts.experts_on_cpu(base.model) if args.generate_batches else None
        variant_rows("fp8 experts", args.fp8_experts, fp8_experts=True)
        if args.fp8_kv_cache:
            variant_rows("fp8 experts and kv cache", args.fp8_experts, fp8_experts=True,
                         fp8_kv_cache=True)  # fmt: skip
        if bf16_experts is not None:
            fp8_experts.restore_experts(base.model, bf16_experts)
            del bf16_experts
            reset_peak(device)  # the FP8 values freed
    result["generate_on_bf16_experts"] = not fp8_experts.any_quantized(base.model)
    if args.generate_batches:
        # generate()'s static cache compiles its decode step: with the engines' compiled
        # regions still in torch.compile's caches it ran ~2.2x slower (H200, x1: 22.5
        # against 48.0 tok/s after this reset)
        torch._dynamo.reset()
    for cache in args.generate_caches:
        for batch in args.generate_batches:
            if cache == "static" and batch > args.static_max_batch:
                continue
            record(bench_generate(base, requests[:batch], cache, args.new_tokens))
    return result


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
        if row is not None and not row.error:
            value = getattr(row, field_name)
            met = value <= bound if at_most else value >= bound
            out[what] = {"value": value, "bound": bound, "at_most": at_most, "met": met}
    return out


def ratios(rows: list[Row]) -> dict:
    """Engine tok/s over every generate() row's tok/s."""
    baselines = [r for r in rows if r.name.startswith("generate") and r.tok_per_s]
    out = {}
    for row in rows:
        if row.name.startswith("engine") and row.tok_per_s:
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
        f"{row.ttft_p50_ms:>9.1f} {row.ttft_p95_ms:>9.1f} {row.decode_step_ms:>8.2f} "
        f"{row.peak_memory_gib:>9.2f}",
        flush=True,
    )


def print_table(result: dict) -> None:
    print(
        f"\n{result['model']} on {result['device']}, {result['prompt_tokens']} prompt tokens "
        f"({result['image_soft_tokens']} image soft tokens), {result['new_tokens']} new tokens"
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
