"""The bench's rows: the batching engine driven step by step, and transformers' generate().

The engine is timed only through its public surface: `prepare`, `add`, `step`, the events
a request's emit callback receives, and the state of the sequences the bench holds (a
sequence that leaves WAITING in a step was prefilled in it).
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import torch

from inference.engine import GemmaEngine
from inference.runtime.batch_engine import BatchEngine
from inference.runtime.sequence import Sequence, Status
from inference.types import Delta, Finished, Request
from inference.worker import host_prep_threads


@dataclass
class Row:
    name: str
    concurrency: int
    output_tokens: int = 0
    seconds: float = 0.0
    tok_per_s: float = 0.0
    images_per_s: float = 0.0
    ttft_p50_ms: float | None = None  # None: no request showed a first token
    ttft_p95_ms: float | None = None
    decode_step_ms: float = 0.0
    peak_memory_gib: float = 0.0
    error: str | None = None
    extra: dict = field(default_factory=dict)


# -- device helpers ----------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


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


# -- one request's times, from its events --------------------------------------------------------
@dataclass
class Tracked:
    """A request's times (seconds on the row's clock) as its events arrive: its first
    token read back (engine rows, from the held sequence), else its first Delta, the first
    text as the bot sees it (random weights may never decode to visible text)."""

    seq: Sequence | None = None  # the prepared sequence (engine rows)
    arrival: float | None = None  # None: not sent yet
    first_token: float | None = None
    first_text: float | None = None
    tokens_before_text: int = 0  # tokens read back before the first visible text (engine rows)
    done: float | None = None
    tokens: int = 0
    prompt_tokens: int = 0

    def on_event(self, event, now: float) -> bool:
        """Record `event`; whether it finished the request."""
        if isinstance(event, Delta) and self.first_text is None:
            self.first_text = now
            self.tokens_before_text = len(self.seq.output_ids) - 1 if self.seq else 0
        if not isinstance(event, Finished):
            return False
        self.done, self.tokens = now, event.num_output_tokens
        self.prompt_tokens = event.num_prompt_tokens
        return True

    def saw_token(self, now: float) -> bool:
        """Record `now` as the first token's time if the held sequence has one yet."""
        if self.first_token is None and self.seq is not None and self.seq.output_ids:
            self.first_token = now
        return self.first_token is not None

    @property
    def first_answer(self) -> float | None:
        return self.first_token if self.first_token is not None else self.first_text


def timed_row(row: Row, tracked: list[Tracked], device: torch.device) -> Row:
    """Fill `row`'s throughput and time-to-first-text from its requests' times."""
    start = min(state.arrival for state in tracked)
    wall = max(state.done for state in tracked) - start
    row.output_tokens = sum(state.tokens for state in tracked)
    row.seconds = round(wall, 3)
    row.tok_per_s = round(row.output_tokens / wall, 1)
    row.images_per_s = round(len(tracked) / wall, 2)
    row.peak_memory_gib = peak_gib(device)
    row.extra["requests"] = len(tracked)
    if any(state.first_answer is None for state in tracked):
        return row  # no first token to time
    first = [(state.first_answer - state.arrival) * 1000 for state in tracked]
    row.ttft_p50_ms = round(statistics.median(first), 1)
    row.ttft_p95_ms = round(percentile(first, 0.95), 1)
    # a burst's two phases: until every request has its first token (prefills, with decode
    # steps between them), then the decode steps after the last prefill
    last_first = max(state.first_answer for state in tracked) - start
    row.extra["until_last_first_token_s"] = round(last_first, 3)
    row.extra["after_last_first_token_s"] = round(wall - last_first, 3)
    row.extra["first_step_ms"] = round(min(state.first_answer for state in tracked) * 1000, 1)
    return row


# -- the batching engine, step by step ----------------------------------------------------------
class StepTimes:
    """Each step's wall time, sorted by what it ran (read from the held sequences): a step
    that admitted one prefilled; one where all `concurrency` ran decoded a full batch. A
    prefill step's GPU time from CUDA events around it, decode beside it included."""

    def __init__(self, device: torch.device, concurrency: int) -> None:
        self.cuda = device.type == "cuda"
        self.concurrency = concurrency
        self.prefill: list[float] = []
        self.prefill_gpu: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self.full_decode: list[float] = []

    def step(self, engine: BatchEngine, sent: list[Sequence]) -> None:
        waiting = [seq for seq in sent if seq.status is Status.WAITING]
        running = sum(seq.status is Status.RUNNING for seq in sent)
        events = None
        if waiting and self.cuda:  # only where a prefill may run: no events in decode runs
            events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            events[0].record()
        started = time.perf_counter()
        engine.step()
        seconds = time.perf_counter() - started
        if events is not None:
            events[1].record()
        if any(seq.status is not Status.WAITING for seq in waiting):
            self.prefill.append(seconds)
            if events is not None:
                self.prefill_gpu.append(events)
        elif running == self.concurrency:
            self.full_decode.append(seconds)

    def summary(self, row: Row) -> None:
        full = self.full_decode
        row.decode_step_ms = round(statistics.median(full) * 1000, 2) if full else 0.0
        row.extra["full_batch_decode_steps"] = len(full)
        row.extra["prefill_steps"] = len(self.prefill)
        row.extra["prefill_step_ms_first_median"] = [
            round(self.prefill[0] * 1000, 1),
            round(statistics.median(self.prefill) * 1000, 1),
        ]
        if self.prefill_gpu:
            torch.cuda.synchronize()
        gpu = [round(start.elapsed_time(end), 1) for start, end in self.prefill_gpu[:8]]
        row.extra["prefill_step_gpu_ms"] = gpu  # the first ones, in order


def bench_engine(
    engine: BatchEngine,
    requests: list[Request],
    arrivals: list[float | None],
    name: str,
    *,
    concurrency: int | None = None,
    follow_up: dict[int, int] | None = None,
) -> Row:
    """Feed requests at their arrival offsets (seconds), step until all finish. A request
    whose arrival is None is sent when the one naming it in `follow_up` finishes (a closed
    loop: each client sends its next photo as soon as its answer is complete). The photo
    cache serves as it does while serving; the row's photos are forgotten after it."""
    concurrency = concurrency or len(requests)
    row = Row(name=name, concurrency=concurrency)
    device = engine.base.device
    if device.type == "cuda":  # the allocator keeps its cache, as it does while serving
        torch.cuda.reset_peak_memory_stats(device)
    owner = f"bench {name} x{concurrency}"
    with ThreadPoolExecutor(host_prep_threads()) as pool:  # off the clock: before arrival
        prepared = list(pool.map(engine.prepare, [replace(r, owner=owner) for r in requests]))
    tracked = [Tracked(seq) for seq in prepared]
    photos_before = engine.runner.photos.stats()
    retries_before = alloc_retries(device)
    pauses = GcPauses()
    steps = drive(engine, tracked, arrivals, follow_up or {}, StepTimes(device, concurrency))
    pauses.stop()
    timed_row(row, tracked, device)
    steps.summary(row)
    photos = engine.runner.photos.stats()
    row.extra["photo_cache"] = {
        "photos": photos["photos"] - photos_before["photos"],
        **{key: photos[key] - photos_before[key] for key in ("hits", "misses")},
    }
    engine.forget(owner)
    prompt_tokens = [seq.num_prompt_tokens for seq in prepared]
    row.extra["prompt_tokens_min_max"] = [min(prompt_tokens), max(prompt_tokens)]
    first_text_at = [state.tokens_before_text for state in tracked]
    row.extra["tokens_before_first_text_max"] = max(first_text_at)
    # cudaFree + cudaMalloc when the caching allocator ran out: slow, and a sign of pressure
    row.extra["allocator_retries"] = alloc_retries(device) - retries_before
    row.extra["gc_pauses"] = pauses.summary()
    return row


def drive(
    engine: BatchEngine,
    tracked: list[Tracked],
    arrivals: list[float | None],
    follow_up: dict[int, int],
    steps: StepTimes,
) -> StepTimes:
    """Send the requests as they arrive (or as follow-ups) and step until all finished."""
    order = sorted((i for i, t in enumerate(arrivals) if t is not None), key=lambda i: arrivals[i])
    released: list[int] = []  # follow-ups due now
    sent: list[Sequence] = []
    no_token_yet = [state for state in tracked if state.seq is not None]
    started = time.perf_counter()

    def emitter(index: int) -> Callable:
        def emit(event) -> None:
            finished = tracked[index].on_event(event, time.perf_counter() - started)
            if finished and index in follow_up:
                released.append(follow_up[index])

        return emit

    def send(index: int, now: float) -> None:
        tracked[index].arrival = now
        sent.append(tracked[index].seq)
        engine.add(tracked[index].seq, emitter(index), lambda: False)

    while order or released or engine.num_active:
        now = time.perf_counter() - started
        while order and arrivals[order[0]] <= now:
            send(order.pop(0), now)
        while released:
            send(released.pop(0), now)
        if not engine.num_active:
            time.sleep(max(0.0, arrivals[order[0]] - now))
            continue
        steps.step(engine, sent)
        now = time.perf_counter() - started
        no_token_yet = [state for state in no_token_yet if not state.saw_token(now)]
        sent = [seq for seq in sent if seq.status is not Status.FINISHED]
    return steps


def bench_closed_loop(engine: BatchEngine, rounds: list[list[Request]]) -> Row:
    """len(rounds[0]) clients, each sending one photo a round, the next as soon as its
    previous answer is complete: the engine under a steady load."""
    clients = len(rounds[0])
    requests = [request for batch in rounds for request in batch]
    arrivals: list[float | None] = [0.0] * clients + [None] * (len(requests) - clients)
    follow_up = {index: index + clients for index in range(len(requests) - clients)}
    name = f"engine, closed loop x{len(rounds)}"
    return bench_engine(engine, requests, arrivals, name, concurrency=clients, follow_up=follow_up)


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

    return {
        "input_ids": left_pad("input_ids", pad),
        "attention_mask": left_pad("attention_mask", 0),
        "mm_token_type_ids": left_pad("mm_token_type_ids", 0),
        "pixel_values": torch.cat([item["pixel_values"] for item in items]),
        "image_position_ids": torch.cat([item["image_position_ids"] for item in items]),
    }


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
