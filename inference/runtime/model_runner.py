"""Run Gemma 4's forward passes for the batching engine: batched prefill (vision + prompt)
into KV slots, and one decode step for all running sequences, optionally replayed from
CUDA graphs captured per batch size."""

from __future__ import annotations

import math
from collections.abc import Callable

import structlog
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import DynamicCache

from inference.runtime.config import EnginePaths, RuntimeConfig, compile_backend
from inference.runtime.gemma4 import fast_ops, vision
from inference.runtime.gemma4.fp8_experts import FP8
from inference.runtime.kernels import Kernels
from inference.runtime.kv_cache import LayerSpec, SlotKVCache
from inference.runtime.photo_cache import PhotoCache
from inference.runtime.prefix_cache import PrefixCache, PrefixKV, prompt_cache

log = structlog.get_logger()

# Prefill attention without cuDNN: it builds an execution plan for every new prompt shape
# (slow: docs/performance.md), and prompt lengths change with every photo and question.
PREFILL_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def layer_specs(model) -> list[LayerSpec]:
    text_config = model.config.get_text_config()
    specs = []
    for layer_type, layer in zip(
        text_config.layer_types, model.model.language_model.layers, strict=True
    ):
        attention = layer.self_attn
        specs.append(
            LayerSpec(
                is_sliding=layer_type == "sliding_attention",
                num_kv_heads=attention.k_proj.out_features // attention.head_dim,
                head_dim=attention.head_dim,
            )
        )
    return specs


def pinned(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor in page-locked memory (itself if it is already), or itself where pinning
    is refused (no GPU, a locked-memory limit): its copy to the GPU then waits for the
    GPU's queue, a little slower, but the request runs."""
    try:
        return tensor.pin_memory()
    except RuntimeError:
        return tensor


def attend_length_buckets(max_seq_len: int, lengths: tuple[int, ...] | None) -> list[int]:
    """Lengths a decode step may attend to (each step takes the shortest that holds all its
    rows): a step of short sequences does not read the full-length global KV slots.
    None: from 512, each ~1.25x the last (rounded up to 256), and max_seq_len. With powers
    of two a photo prompt's answer (~1,000-1,100 positions) read 2,048 positions of every
    global layer."""
    if lengths is None:
        lengths, length = [], 512
        while length < max_seq_len:
            lengths.append(length)
            length = math.ceil(length * 1.25 / 256) * 256
    return sorted({length for length in lengths if length < max_seq_len} | {max_seq_len})


# the sliding layers' shorter ring reads after a kept prefix come in steps of this many: finer
# steps read less but capture more graphs (docs/performance.md)
OWN_LENGTH_STEP = 128


def own_lengths(
    batch: int, length: int, window: int, capacity: int, attend_lengths: list[int]
) -> list[int]:
    """Ring positions a sliding layer's decode step may read at this batch size and
    attended length, shortest first (a graph is captured for each). Without a kept prefix
    (`capacity` 0), its attended length (or the window); with one, from batches of
    PREFIX_MATMUL_ROWS on also shorter ones (rows after the kept prefix hold fewer own
    positions): as few as rows at the length below this one may need."""
    whole = min(window, length)
    if not capacity or batch < fast_ops.PREFIX_MATMUL_ROWS:
        return [whole]
    below = max((n for n in attend_lengths if n < length), default=0)
    least = below - capacity + 1  # a row at `below` after the longest kept prefix
    shorter = range(OWN_LENGTH_STEP, whole, OWN_LENGTH_STEP)
    return [own for own in shorter if own >= least and own >= window // 2] + [whole]


def finished_logits(logits: torch.Tensor, softcap: float | None, suppressed: torch.Tensor):
    """lm_head's output as the sampler takes it: float32, soft-capped, suppressed tokens
    -inf (eager: four passes over [rows, vocab]; compiled: one)."""
    logits = logits.float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits.index_fill(1, suppressed, float("-inf"))


def logits_finisher(compile_layers: bool | str | Callable) -> Callable:
    """finished_logits, compiled where the layers are (one pass over the vocabulary: 64
    rows are 67 MB in float32 a pass); if that fails, the engine's prefill warm-up meets
    it and starts again uncompiled."""
    if not compile_layers:
        return finished_logits
    return torch.compile(finished_logits, backend=compile_backend(compile_layers))


class ModelRunner:
    def __init__(
        self,
        model,
        runtime: RuntimeConfig,
        paths: EnginePaths,
        kernels: Kernels,
        *,
        suppressed_ids: list[int],
        pad_token_id: int,
    ) -> None:
        """`runtime` and `paths` as the engine resolved them for this device (no None
        switches; max_slots within the KV cache's budget)."""
        self.model = model
        self.language_model = model.model.language_model
        self.device = model.device
        self.pad_token_id = pad_token_id
        text_config = model.config.get_text_config()
        # an image's tokens see the whole image (sliding layers) only in checkpoints that
        # say so, as transformers' masks do; elsewhere prompts are causal
        self.image_rule = text_config.use_bidirectional_attention == "vision"
        # layers that read an earlier layer's keys and values (none in Gemma 4 26B-A4B)
        self.shared_kv_layers = getattr(text_config, "num_kv_shared_layers", 0)
        self.softcap = text_config.final_logit_softcapping
        self.flash_prompts = paths.attention  # sliding layers' prompt attention unmasked
        # ... as the Triton kernel (kernels.prompt_attention)
        self.prompt_kernel = kernels.prompt_attention
        # photos through vision.photo_embeddings, their soft tokens put in place here
        self.packed_photos = paths.packed_photos
        # few rows' decode steps read the kept prefix through kernels.decode_attention, else
        # as matmuls
        self.kept_prefix_kernel = kernels.decode_attention
        self.cache = self._make_cache(runtime, paths.kept_prefix_positions, kernels.kv_write)
        self.prefixes = PrefixCache(runtime.prefix_cache_tokens)
        self.photos = PhotoCache(runtime.photo_cache_bytes)
        self.suppressed = torch.tensor(suppressed_ids, dtype=torch.long, device=self.device)
        self._finish_logits = logits_finisher(runtime.compile_layers)
        self._positions = self.cache.step_positions
        self._ids = torch.full_like(self._positions, pad_token_id)  # [max_slots]
        self.attend_lengths = attend_length_buckets(runtime.max_seq_len, paths.attend_lengths)
        graph_batches = paths.graph_batch_sizes if runtime.cuda_graphs else ()
        self._graph_batches = sorted(b for b in graph_batches if b <= runtime.max_slots)
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._graph_logits: torch.Tensor | None = None
        if self._graph_batches:
            self._capture_or_run_eager()

    def _make_cache(self, runtime: RuntimeConfig, kept_prefix: int, kv_write: bool):
        """The KV slots (the sliding layers' in FP8 where runtime.fp8_kv_cache), with room
        for a kept prefix of `kept_prefix` positions; decode steps write keys and values
        as one launch a layer where `kv_write` (the kernel passed its check)."""
        cache = SlotKVCache(
            layer_specs(self.model),
            max_slots=runtime.max_slots,
            max_seq_len=runtime.max_seq_len,
            window=self.model.config.get_text_config().sliding_window,
            dtype=self.model.dtype,
            device=self.device,
            sliding_dtype=FP8 if runtime.fp8_kv_cache else None,
            prefix_capacity=-(-kept_prefix // 64) * 64,  # kernels.decode_attention's blocks
        )
        if kv_write:
            from inference.runtime.kernels.kv_write import write  # needs Triton

            cache.write_step = write
        return cache

    # -- prefill ---------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(
        self, inputs: list[dict], slots: list[int], prefix: tuple[int, ...] = ()
    ) -> torch.Tensor:
        """Prefill prompts right-padded into one batch, store their KV; last-token logits.
        `prefix`: token ids all the prompts start with; its KV comes from the prefix cache
        (computed once), and only the rest of each prompt runs through the model."""
        lengths = [int(item["input_ids"].shape[1]) for item in inputs]
        shared = self._prefix_kv(prefix) if prefix else None
        skip = len(prefix) if shared is not None else 0
        width = max(lengths) - skip
        types = [i.get("mm_token_type_ids") for i in inputs]
        batch = self._prompt_batch(inputs, lengths, types, skip, width)
        spans = None
        if self.flash_prompts:
            spans = [fast_ops.vision_spans(t[0, skip:].tolist())
                     if t is not None and self.image_rule else [] for t in types]  # fmt: skip
        # the prefix's K/V apart from the prompts' where the kernel serves every layer (no
        # join, which copies it before each prompt's in every layer: docs/performance.md);
        # else full-length K/V, the prefix's first
        apart = shared is not None and self._kernel_serves(spans)
        cache = prompt_cache(shared or [], len(inputs), apart=apart)
        step = self._prompt_step(spans, skip, width, shared if apart else None)
        with sdpa_kernel(PREFILL_ATTENTION):
            output = self.model.model(**batch, past_key_values=cache, use_cache=True, step=step)
        rows = torch.arange(len(inputs), device=self.device)
        last = self._to_device(torch.tensor([n - skip - 1 for n in lengths]))
        hidden = output.last_hidden_state[rows, last]
        self.cache.store_prompts(
            slots,
            [layer.keys for layer in cache.layers],
            [layer.values for layer in cache.layers],
            lengths,
            shared,
            apart=apart,
            prefix_ids=prefix if shared is not None else (),
        )
        return self._logits(hidden)

    def _prompt_batch(self, inputs, lengths, types, skip: int, width: int) -> dict:
        """The model's inputs for prompts of `lengths` tokens after the first `skip` (cached),
        right-padded to `width`: their ids, or their embeddings with the photos' soft tokens
        in place, and positions; with photos, their tokens' types."""
        ids = self._pad([i["input_ids"][0, skip:] for i in inputs], width, self.pad_token_id)
        positions = torch.arange(skip, skip + width, device=self.device)
        batch = {"position_ids": positions[None].expand(len(inputs), -1)}
        with_images = [i for i in inputs if "pixel_values" in i]
        embeds = self._embeds_with_photos(ids, with_images) if with_images else None
        if embeds is not None:
            batch["inputs_embeds"] = embeds
        else:
            batch["input_ids"] = self._to_device(ids)
            if with_images:  # transformers runs the tower and merges the photos
                batch["pixel_values"], batch["image_position_ids"] = self._photos(with_images)
        if with_images:  # transformers' masks read them by position from the sequence's start
            types = [t[0] if t is not None else torch.zeros(n, dtype=torch.long)
                     for t, n in zip(types, lengths, strict=True)]  # fmt: skip
            batch["mm_token_type_ids"] = self._to_device(self._pad(types, skip + width, 0))
        return batch

    def _kernel_serves(self, spans: list | None) -> bool:
        """Whether the Triton kernel takes every layer's prompt attention, and no layer
        reads another's keys and values (shared KV layers would get the prompts' part)."""
        return spans is not None and self.prompt_kernel and not self.shared_kv_layers

    def _prompt_step(self, spans: list | None, prefix: int, width: int, prefix_kv=None):
        """The attention's view of a prefill of `width` tokens after `prefix` cached ones:
        image spans, with the Triton kernel's visible ends where it serves (and the
        prefix's K/V apart)."""
        ends = None
        if spans is not None and self.prompt_kernel:
            ends = self._to_device(fast_ops.visible_ends(spans, prefix, width))
        return fast_ops.StepAttention(spans=spans, ends=ends, prefix_kv=prefix_kv)

    def cached_prefix_tokens(self, prefix: tuple[int, ...]) -> int:
        """Of a prompt starting with `prefix`, the tokens a prefill takes from the prefix
        cache instead of computing them (kept now, or computed once and kept)."""
        return len(prefix) if self.prefixes.fits(prefix) else 0

    def _prefix_kv(self, prefix: tuple[int, ...]) -> PrefixKV | None:
        """The prefix's KV from the cache, or computed and kept now; None: not cacheable."""
        if not self.prefixes.fits(prefix):
            return None
        entry = self.prefixes.get(prefix)
        if entry is None:
            ids = self._to_device(torch.tensor(prefix, dtype=torch.long)[None])
            cache = DynamicCache()
            spans = [[]] if self.flash_prompts else None
            step = self._prompt_step(spans, 0, len(prefix))
            with sdpa_kernel(PREFILL_ATTENTION):
                self.language_model(input_ids=ids, past_key_values=cache, use_cache=True, step=step)
            entry = [(layer.keys, layer.values) for layer in cache.layers]
            self.prefixes.put(prefix, entry)
            log.info("prefix_cached", prefix_tokens=len(prefix), **self.prefixes.stats())
        return entry

    def _photos(self, parts: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels and patch positions of prepared inputs (or of some of their photos, in
        the same keys), copied part by part (pinned when prepared), joined on the device."""
        pixels = torch.cat([self._to_device(part["pixel_values"]) for part in parts])
        positions = torch.cat([self._to_device(part["image_position_ids"]) for part in parts])
        return pixels.to(self.model.dtype), positions

    def _photo_features(self, with_images: list[dict], counts: list[int]) -> torch.Tensor:
        """The photos' soft tokens in photo order: from the photo cache, and from the tower
        for the others (each once, however many prompts of this prefill carry it)."""
        photos = [(i, n) for i in with_images for n in range(len(i["pixel_values"]))]
        keys = [(i.get("photo_keys") or [None] * len(i["pixel_values"]))[n] for i, n in photos]
        # a photo without a key stands for itself (its place)
        names = [key if key is not None else place for place, key in enumerate(keys)]
        features = {name: self.photos.get(name) if name in keys else None
                    for name in dict.fromkeys(names)}  # fmt: skip
        todo = [names.index(name) for name, found in features.items() if found is None]
        if todo:
            photo_tensors = ("pixel_values", "image_position_ids")
            wanted = [{key: inputs[key][n : n + 1] for key in photo_tensors}
                      for inputs, n in (photos[j] for j in todo)]  # fmt: skip
            computed = vision.photo_embeddings(
                self.model, *self._photos(wanted), [counts[j] for j in todo]
            )
            cells = self.model.config.vision_config.pooling_kernel_size**2
            parts = computed.split([counts[j] // cells for j in todo])
            for j, part in zip(todo, parts, strict=True):
                features[names[j]] = part
                self.photos.put(keys[j], part)
        # each prompt's owners own the photos it carries, however they were found, so that
        # Worker.forget drops them (a photo in two prompts of this prefill has two owners)
        for (inputs, _), key in zip(photos, keys, strict=True):
            for owner in inputs.get("photo_owners", ()):
                self.photos.own(key, owner)
        return torch.cat([features[name] for name in names])

    def _embeds_with_photos(self, ids: torch.Tensor, with_images: list[dict]):
        """Token embeddings of the padded prompt ids [B, W] (CPU) with the photos' soft
        tokens in the image tokens' places, as transformers merges them, without its host
        syncs (the placeholders are found on the CPU); None: transformers merges them."""
        if not self.packed_photos:
            return None
        counts = vision.patch_counts(torch.cat([i["image_position_ids"] for i in with_images]))
        if counts is None:
            return None
        is_image = ids == self.model.config.image_token_id
        cells = self.model.config.vision_config.pooling_kernel_size**2
        if int(is_image.sum()) != sum(count // cells for count in counts):
            raise ValueError("image tokens and photos do not match")
        features = self._photo_features(with_images, counts)
        text_ids = ids.masked_fill(is_image, self.model.config.get_text_config().pad_token_id)
        embeds = self.model.model.get_input_embeddings()(self._to_device(text_ids))
        places = self._to_device(is_image.flatten().nonzero().flatten())
        flat = embeds.flatten(0, 1).index_copy(0, places, features.to(embeds.dtype))
        return flat.view_as(embeds)

    def _pad(self, rows: list[torch.Tensor], width: int, value: int) -> torch.Tensor:
        """CPU rows, right-padded into one tensor (on the CPU)."""
        out = torch.full((len(rows), width), value, dtype=torch.long)
        for index, row in enumerate(rows):
            out[index, : row.shape[0]] = row
        return out

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """Copy without making the CPU wait for the GPU's queue (from pinned memory; a
        tensor pinned already is not copied on the CPU again)."""
        if self.device.type == "cuda":
            tensor = pinned(tensor)
        return tensor.to(self.device, non_blocking=True)

    # -- decode ----------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, positions: list[int], token_ids: list[int] | None = None) -> torch.Tensor:
        """One step for running sequences in slots 0..n-1; logits [n, vocab] (float32).
        Each row feeds the token last stored for its slot (`store_tokens`), so a step can
        be launched before the previous one's tokens are back on the CPU."""
        n = len(positions)
        bucket = next((b for b in self._graph_batches if b >= n), n)
        length = next(length for length in self.attend_lengths if length > max(positions))
        rows = list(range(n))
        kept, own = True, min(self.cache.window, length)
        if self.cache.prefix_capacity == 0 or (  # the kept prefix is past every row's window
            length > self.cache.window and not self.cache.sees_kept_prefix(positions, rows)
        ):
            kept = False
        else:
            needed = self.cache.own_needed(positions, rows)
            own = next(own for own in self.own_lengths(bucket, length) if own >= needed)
        if token_ids is not None:
            self._ids[:n].copy_(torch.tensor(token_ids), non_blocking=True)
        pad = bucket - n
        step = self.cache.step_inputs(positions + [0] * pad, rows + [self.cache.scratch_slot] * pad)
        self.cache.step[:, :bucket].copy_(step.to(self.device, non_blocking=True))
        if (bucket, length, own, kept) in self._graphs:
            graph, logits = self._graphs[bucket, length, own, kept]
            graph.replay()
            return logits[:n]
        return self._decode_forward(bucket, length, own, kept)[:n]

    def graph_keys(self, batch: int, length: int) -> list[tuple[int, bool]]:
        """(own length, kept prefix read) of the graphs of this batch size and length:
        decode's choices. Without the kept prefix, the whole ring, for steps whose rows'
        windows have all passed it (or where none is kept)."""
        whole = min(self.cache.window, length)
        if not self.cache.prefix_capacity:
            return [(whole, False)]
        kept = [(own, True) for own in self.own_lengths(batch, length)]
        return kept + ([(whole, False)] if length > self.cache.window else [])

    def own_lengths(self, batch: int, length: int) -> list[int]:
        """own_lengths for this runner's cache and attended lengths."""
        cache = self.cache
        return own_lengths(batch, length, cache.window, cache.prefix_capacity, self.attend_lengths)

    @torch.inference_mode()
    def store_tokens(self, slots: list[int], tokens: torch.Tensor) -> None:
        """Sampled tokens [n] become the next decode inputs of their slots (on the device)."""
        if slots == list(range(len(slots))):
            self._ids[: len(slots)].copy_(tokens)
        else:
            index = torch.tensor(slots, dtype=torch.long).to(self.device, non_blocking=True)
            self._ids.index_copy_(0, index, tokens)

    @torch.inference_mode()
    def move_slot(self, from_slot: int, to_slot: int) -> None:
        """A sequence changes slot: its KV cache and its next input token go with it."""
        self.cache.move(from_slot, to_slot)
        self._ids[to_slot] = self._ids[from_slot]

    def _decode_forward(self, batch: int, length: int, own: int, kept: bool) -> torch.Tensor:
        """Rows 0..batch-1 attend to the first `length` positions of their slots (the
        sliding layers to their rings' first `own`, with `kept` after the kept prefix)."""
        self.cache.attend_len, self.cache.own_len = length, own
        positions = self._positions[:batch]
        step = None
        if kept:
            cache = self.cache
            prefix = fast_ops.KeptPrefix(
                cache.prefix_keys, cache.prefix_values, self.kept_prefix_kernel
            )
            step = fast_ops.StepAttention(kept=prefix)
        output = self.language_model(
            input_ids=self._ids[:batch, None],
            attention_mask=self.cache.decode_masks(batch, kept),
            position_ids=positions[:, None],
            past_key_values=self.cache,
            use_cache=True,
            step=step,
        )
        return self._logits(output.last_hidden_state[:, -1])

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._finish_logits(self.model.lm_head(hidden), self.softcap, self.suppressed)

    def _capture_or_run_eager(self) -> None:
        try:
            self._capture()
        except Exception:  # eager decode still works, only slower
            log.exception("cuda_graph_capture_failed")
            self._graphs.clear()

    @torch.inference_mode()
    def _capture(self) -> None:
        """A graph per (batch size, attended length, sliding layers' ring positions read,
        kept prefix read), their logits in one buffer for all (not one each: they add up,
        docs/performance.md)."""
        pool = None
        vocab = self.model.lm_head.out_features
        self._graph_logits = torch.empty(max(self._graph_batches), vocab, device=self.device)
        # largest first, so the smaller ones reuse its memory pool
        for batch in reversed(self._graph_batches):
            for length in reversed(self.attend_lengths):
                for own, kept in reversed(self.graph_keys(batch, length)):
                    stream = torch.cuda.Stream()
                    stream.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(stream):
                        for _ in range(2):
                            self._decode_forward(batch, length, own, kept)
                    torch.cuda.current_stream().wait_stream(stream)
                    graph = torch.cuda.CUDAGraph()
                    logits = self._graph_logits[:batch]
                    with torch.cuda.graph(graph, pool=pool):
                        logits.copy_(self._decode_forward(batch, length, own, kept))
                    pool = graph.pool()
                    self._graphs[batch, length, own, kept] = (graph, logits)
        torch.cuda.synchronize()
        log.info("cuda_graphs_captured", batch_sizes=self._graph_batches,
                 attend_lengths=self.attend_lengths)  # fmt: skip
