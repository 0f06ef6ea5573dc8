"""Continuous batching: requests join the running batch between decode steps and leave
as soon as they finish. `step()` reads like the algorithm: schedule → run → postprocess."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog
import torch
from PIL import Image

from inference.engine import GemmaEngine
from inference.prep_processes import Preparer
from inference.runtime.config import EnginePaths, RuntimeConfig
from inference.runtime.gemma4 import fp8_experts, layers, vision
from inference.runtime.gemma4.patch import patch_model
from inference.runtime.kernels import Kernels
from inference.runtime.kv_cache import SlotKVCache
from inference.runtime.model_runner import ModelRunner, layer_specs, pinned
from inference.runtime.sampler import sample
from inference.runtime.scheduler import Scheduler
from inference.runtime.sequence import Sequence, Status
from inference.types import Event, InferenceError, Request
from inference.worker import InputsOf

log = structlog.get_logger()

# a photo's tensors, pinned while the request is prepared (a worker thread), not in the
# prefill's CPU time while the GPU waits
PINNED_INPUTS = ("pixel_values", "image_position_ids")


def blank_photo(width: int = 640, height: int = 480) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, format="JPEG")
    return buffer.getvalue()


class BatchEngine:
    def __init__(
        self, base: GemmaEngine, runtime: RuntimeConfig, paths: EnginePaths | None = None
    ) -> None:
        paths = paths or EnginePaths()
        paths.check(runtime)
        self.base = base
        model = base.model
        self.paths = self._paths_here(paths, runtime)
        # the kernel families' start-up checks, once (the runner is built again, uncompiled,
        # if compiling fails)
        self.kernels = Kernels.detect(
            model.device,
            experts=self.paths.own_layers,
            softmax=self.paths.own_layers,
            # decode attention over FP8 keys and values, or after a prefix kept once (few rows)
            decode_attention=bool(runtime.fp8_kv_cache or self.paths.kept_prefix_positions),
            prompt_attention=self.paths.attention,
        )
        self.runtime = runtime = self._runtime_here(runtime)
        started = time.monotonic()
        if runtime.fp8_experts:
            self._quantize_experts()
        self._start()
        self.scheduler = Scheduler(
            max_slots=runtime.max_slots,
            max_seq_len=runtime.max_seq_len,
            max_prefill_seqs=runtime.max_prefill_seqs,
            deep_queue_prefill_seqs=runtime.deep_queue_prefill_seqs,
            cached_tokens=self.runner.cached_prefix_tokens,
        )
        self.stop_ids = set(self.base.stop_ids)
        self._in_flight: list[_InFlight] = []
        self.generator = torch.Generator(device=model.device).manual_seed(runtime.seed)
        log.info(
            "batch_engine_ready",
            max_slots=runtime.max_slots,
            max_seq_len=runtime.max_seq_len,
            cuda_graphs=runtime.cuda_graphs,
            compiled_layers=bool(self.runtime.compile_layers),
            fused_experts_max_tokens=self.patch.experts.fused_max_tokens,
            fp8_experts=fp8_experts.any_quantized(model),
            fp8_kv_cache=any(k.dtype == fp8_experts.FP8 for k in self.runner.cache.keys),
            kept_prefix_positions=self.runner.cache.prefix_capacity,
            triton_prompt_attention=self.runner.prompt_kernel,
            seconds=round(time.monotonic() - started, 2),
        )

    def _paths_here(self, paths: EnginePaths, runtime: RuntimeConfig) -> EnginePaths:
        """`paths` on this device: fused norms decided; a prefix kept once in the sliding
        layers only where there is a prefix cache (else no buffer, no graphs that read it,
        no kernel check for it)."""
        gpu = self.base.model.device.type == "cuda"
        kept = paths.kept_prefix_positions if runtime.prefix_cache_tokens else 0
        if kept is None:
            kept = self.base.shared_prefix_tokens()
        return replace(
            paths,
            fused_norms=gpu if paths.fused_norms is None else paths.fused_norms,
            kept_prefix_positions=kept,
        )

    def _runtime_here(self, runtime: RuntimeConfig) -> RuntimeConfig:
        """`runtime` on this device: CUDA graphs and compiling decided (compiling only for
        the own layers), FP8 keys and values only where their kernel passed its check,
        max_slots within the KV cache's memory budget."""
        gpu = self.base.model.device.type == "cuda"
        compile_layers = gpu if runtime.compile_layers is None else runtime.compile_layers
        runtime = replace(
            runtime,
            cuda_graphs=gpu if runtime.cuda_graphs is None else runtime.cuda_graphs,
            compile_layers=compile_layers if self.paths.own_layers else False,
            fp8_kv_cache=runtime.fp8_kv_cache and self.kernels.decode_attention,
        )
        return self._within_budget(runtime)

    def _quantize_experts(self) -> None:
        """FP8 experts, in place: the model then serves only through this engine's layers."""
        model = self.base.model
        text_layers = model.model.language_model.layers
        if not fp8_experts.supported(model.device):
            log.warning("fp8_experts_unavailable", reason="device", device=str(model.device))
        elif not all(layers.is_supported(layer) for layer in text_layers):
            log.warning("fp8_experts_unavailable", reason="layer kind not supported")
        else:
            fp8_experts.quantize_experts(model)

    def _start(self) -> None:
        """The runner with compiled layers where asked; where compiling fails (e.g. no C
        compiler for Triton on this host), without: slower, but serving."""
        try:
            self._start_runner()
        except Exception:
            if not self.runtime.compile_layers:
                raise
            log.exception("compiled_layers_failed", fallback="layers without torch.compile")
            self.patch.undo()
            self.runner = None
            torch.cuda.empty_cache()  # a no-op where CUDA never started
            self.runtime = replace(self.runtime, compile_layers=False)
            self._start_runner()

    def _start_runner(self) -> None:
        """The patched model (compiled or not), the KV cache and CUDA graphs, then the
        prefill warm-up."""
        model, runtime = self.base.model, self.runtime
        self.patch = patch_model(model, self.kernels, self.paths, runtime.compile_layers)
        self.runner = ModelRunner(
            model,
            runtime,
            self.paths,
            self.kernels,
            suppressed_ids=self.base.generation_kwargs["suppress_tokens"],
            pad_token_id=self.base.tokenizer.pad_token_id,
        )
        if runtime.compile_layers:
            self._warm_up_prefill()

    def _within_budget(self, runtime: RuntimeConfig) -> RuntimeConfig:
        """`runtime` with as many KV slots as its memory budget holds (at most max_slots)."""
        if runtime.kv_cache_bytes is None:
            return runtime
        model = self.base.model
        slots = SlotKVCache.slots_within(
            runtime.kv_cache_bytes,
            layer_specs(model),
            max_seq_len=runtime.max_seq_len,
            window=model.config.get_text_config().sliding_window,
            dtype_size=model.dtype.itemsize,
            sliding_dtype_size=1 if runtime.fp8_kv_cache else None,
        )
        if slots < 1:
            raise ValueError(
                f"a KV cache budget of {runtime.kv_cache_bytes / 2**30:.2f} GiB holds no slot "
                f"of {runtime.max_seq_len} positions: raise it or lower max_seq_len"
            )
        if slots < runtime.max_slots:
            log.info("kv_cache_slots_within_budget", slots=slots, asked=runtime.max_slots,
                     budget_gib=round(runtime.kv_cache_bytes / 2**30, 2))  # fmt: skip
        return replace(runtime, max_slots=min(slots, runtime.max_slots))

    def _warm_up_prefill(self) -> None:
        """Prefill every shape class once (1, 2 and 3 prompts, with and without a photo,
        photos of different patch counts; whole prompts and after the system prompt's
        cached KV), so the compiled regions and the system prompt's KV exist before the
        first traveller waits for them."""
        started = time.monotonic()
        photos = [blank_photo(640, 480), blank_photo(480, 640), blank_photo(900, 300)]
        shapes = ((1, False, False), (2, True, False), (1, True, False), (3, True, False),
                  (1, False, True), (2, True, True))  # fmt: skip
        for batch, with_photo, after_prefix in shapes:
            batch = min(batch, self.runtime.max_slots)
            requests = [Request(language="en", question="warm-up " * (row + 1),
                                images=(photos[row],) if with_photo else ())
                        for row in range(batch)]  # fmt: skip
            seqs = [self.prepare(request) for request in requests]
            prefix = seqs[0].prefix if after_prefix else ()
            self.runner.prefill([seq.inputs for seq in seqs], list(range(batch)), prefix)
        if self.paths.packed_photos:
            self._warm_up_photo_batches(photos[0])
        log.info("prefill_warmed_up", seconds=round(time.monotonic() - started, 1))

    @torch.inference_mode()
    def _warm_up_photo_batches(self, photo: bytes) -> None:
        """Photos of one size attend as a batch (vision.same_size_photos), and cuDNN builds
        a plan for each batch shape on first use, which a traveller would wait for
        (docs/performance.md): build them for 1 to a full prefill of 4:3 photos (any phone
        photo, upright or not), as the runner runs them."""
        inputs = self.prepare(Request(language="en", images=(photo,))).inputs
        model = self.base.model
        counts = vision.patch_counts(inputs["image_position_ids"])
        if counts is None:  # not packed: the runner lets transformers run the tower
            return
        pixels = inputs["pixel_values"].to(model.device, model.dtype)
        positions = inputs["image_position_ids"].to(model.device)
        for photos in range(1, self.runtime.deep_queue_prefill_seqs + 1):
            vision.photo_embeddings(
                model,
                pixels.expand(photos, *pixels.shape[1:]),
                positions.expand(photos, *positions.shape[1:]),
                counts * photos,
            )

    def close(self) -> None:
        """Give the model back as transformers made it (for benchmarks sharing it)."""
        self.patch.undo()

    @property
    def max_slots(self) -> int:
        return self.runtime.max_slots

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def num_active(self) -> int:
        """Waiting, running, and finished ones whose last tokens are not read back yet."""
        draining = {
            id(seq)
            for batch in self._in_flight
            for seq in batch.seqs
            if seq.status is Status.FINISHED and not seq.ended
        }
        return self.scheduler.num_active + len(draining)

    def preparer(self) -> Preparer:
        return Preparer.of(self.base)

    def prepare(self, request: Request, inputs_of: InputsOf | None = None) -> Sequence:
        """CPU work for a request (image processing, tokenizing); runs in any thread.
        `inputs_of`: where its inputs are made (a preparing process), else here."""
        inputs, prefix = (inputs_of or self.base.prepare_with_prefix)(request)
        num_prompt_tokens = int(inputs["input_ids"].shape[1])
        if num_prompt_tokens >= self.runtime.max_seq_len:
            raise InferenceError(f"prompt of {num_prompt_tokens} tokens is too long")
        if self.base.device.type == "cuda":  # here, not in the prefill's CPU time
            for name in PINNED_INPUTS:
                if name in inputs:
                    inputs[name] = pinned(inputs[name])
        seq = Sequence(request, None, None, self.base.make_splitter())
        seq.inputs = inputs
        seq.prefix = prefix if self.runtime.prefix_cache_tokens else ()
        seq.num_prompt_tokens = num_prompt_tokens
        seq.max_new_tokens = min(
            request.max_new_tokens, self.runtime.max_seq_len - num_prompt_tokens
        )
        return seq

    def add(
        self,
        prepared: Sequence,
        emit: Callable[[Event], None],
        is_cancelled: Callable[[], bool],
    ) -> None:
        prepared.emit, prepared.is_cancelled = emit, is_cancelled
        self.scheduler.add(prepared)

    def step(self) -> None:
        """Launch this step's decode, then read back the previous step's tokens while the
        GPU works: the CPU side of a step (text, stop checks, scheduling) hides behind the
        next one. A sequence that stops decodes one extra row, which is dropped. A prefill
        blocks the CPU, so before one the tokens already sampled are read back first.
        The running sequences' decode is launched before a prefill: launching a prefill
        keeps the CPU busy longer than the GPU needs for that step, so the step runs
        meanwhile. The new sequences decode from the next step."""
        if self.scheduler.waiting:
            self._read_back_all()
        for seq in [*self.scheduler.waiting, *self.scheduler.running]:
            if seq.is_cancelled():
                self._finish(seq, "cancelled")
        plan = self.scheduler.schedule()
        launched = []
        if plan.decode:
            logits = self.runner.decode([seq.position for seq in plan.decode])
            # a sequence finishing here may hand its slot to an admitted one: the prefill
            # below reads the slots after that
            launched.append(self._sample(plan.decode, logits))
        if plan.prefill:
            launched.extend(self._prefill(plan.prefill))
        self._in_flight.extend(launched)
        self._read_back_all(keep=len(launched) if self.paths.overlap_steps else 0)

    def _read_back_all(self, keep: int = 0) -> None:
        """Read back the launches in flight, all but the last `keep` (oldest first)."""
        done = self._in_flight[: len(self._in_flight) - keep]
        self._in_flight = self._in_flight[len(done) :]
        for batch in done:
            self._read_back(batch)

    def _prefill(self, seqs: list[Sequence]) -> list[_InFlight]:
        """Prefill new sequences. If that fails only they fail, and the running batch goes
        on; out of GPU memory, the group is split in halves and each tried again."""
        try:
            logits = self.runner.prefill(
                [seq.inputs for seq in seqs], [seq.slot for seq in seqs], seqs[0].prefix
            )
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            if len(seqs) > 1:
                log.warning("prefill_out_of_memory", prompts=len(seqs), retry="halves")
                half = len(seqs) // 2
                return self._prefill(seqs[:half]) + self._prefill(seqs[half:])
            log.error("prefill_out_of_memory", prompts=1)
            self._fail(seqs, InferenceError("out of GPU memory for this request"))
            return []
        except Exception as exc:
            log.exception("prefill_failed", prompts=len(seqs))
            self._fail(seqs, InferenceError(f"prefill failed: {type(exc).__name__}"))
            return []
        for seq in seqs:
            seq.inputs = None  # image tensors are no longer needed
        return [self._sample(seqs, logits)]

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor) -> _InFlight:
        """Sample on the device, keep the tokens there as the next inputs, and start copying
        them to the CPU. A sequence whose last token this is gives its slot back now."""
        tokens = sample(logits, [seq.request.sampling for seq in seqs], self.generator)
        self.runner.store_tokens([seq.slot for seq in seqs], tokens)
        batch = _InFlight(seqs, tokens.to("cpu", non_blocking=True))
        if tokens.is_cuda:
            batch.ready = torch.cuda.Event()
            batch.ready.record()
        for seq in seqs:
            seq.num_scheduled += 1
            if seq.num_scheduled >= seq.max_new_tokens:
                self._release(seq, "length")
        return batch

    def _read_back(self, batch: _InFlight) -> None:
        if batch.ready is not None:
            batch.ready.synchronize()
        for seq, token in zip(batch.seqs, batch.tokens.tolist(), strict=True):
            if seq.ended:  # stopped or cancelled meanwhile: this was the dropped extra row
                continue
            delta = seq.splitter.push(token)
            if delta is not None:
                seq.emit(delta)
            if token in self.stop_ids and not seq.request.ignore_stop:
                self._finish(seq, "stop")
            elif len(seq.output_ids) >= seq.max_new_tokens:
                self._finish(seq, "length")

    def _release(self, seq: Sequence, reason: str) -> None:
        """Give the sequence's slot back (the last running one moves into it)."""
        if seq.status is Status.FINISHED:
            return
        for from_slot, to_slot in self.scheduler.finish(seq, reason):
            self.runner.move_slot(from_slot, to_slot)

    def _finish(self, seq: Sequence, reason: str) -> None:
        self._release(seq, reason)
        seq.ended = True
        for event in seq.splitter.finish(num_prompt_tokens=seq.num_prompt_tokens, reason=reason):
            seq.emit(event)

    def _fail(self, seqs: list[Sequence], error: InferenceError) -> None:
        for seq in seqs:
            self._release(seq, "error")
            seq.ended = True
            seq.emit(error)

    def forget(self, owner: str) -> None:
        """Drop the photos `owner`'s requests carried from the photo cache (the one cache
        holding anything of a traveller's: the prefix cache holds the system prompt)."""
        self.runner.photos.forget(owner)

    def fail_all(self, error: InferenceError) -> None:
        """After a failed step: every active request ends with `error`. Unlike `_fail`, no KV
        slots move: every slot is freed, and the GPU state is not to be trusted now (the
        cached prefixes' KV neither: computed again when next needed)."""
        draining = [seq for batch in self._in_flight for seq in batch.seqs]
        self._in_flight = []
        self.runner.prefixes.clear()
        for seq in [*self.scheduler.waiting, *self.scheduler.running, *draining]:
            if seq.ended:
                continue
            if seq.status is not Status.FINISHED:
                self.scheduler.finish(seq, "error")
            seq.ended = True
            seq.emit(error)


@dataclass
class _InFlight:
    """Tokens sampled for `seqs` in one launch, on their way to the CPU."""

    seqs: list[Sequence]
    tokens: torch.Tensor
    ready: torch.cuda.Event | None = None
