"""Settings of the batching engine (no torch here, so settings code can import it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RuntimeConfig:
    max_slots: int = 64  # sequences decoding together; each holds one KV slot
    # GPU memory for the KV cache: fewer slots than max_slots when they would not fit;
    # None: max_slots slots whatever they take (64 of 4,096 positions: ~18 GiB in bf16)
    kv_cache_bytes: int | None = None
    max_seq_len: int = 4096  # prompt + answer, per sequence
    # prompts prefilled together beside a decode step: 8 keep the GPU busy for as long as
    # the CPU launches them, 4 do not (docs/performance.md)
    max_prefill_seqs: int = 8
    # more than max_prefill_seqs waiting: prefill up to this many at once, with no decode
    # step beside it (a deep queue waits anyway; one prefill reads the experts once for
    # all; scheduler.MAX_PREFILL_TOKENS bounds its memory)
    deep_queue_prefill_seqs: int = 16
    cuda_graphs: bool | None = None  # None: on when the model is on a GPU
    graph_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 24, 32, 48, 64)
    # a decode step attends to the shortest of these lengths that holds all its rows (one
    # graph per batch size and length); None: 512, 1024, ... and max_seq_len
    attend_lengths: tuple[int, ...] | None = None
    seed: int = 0
    # the language model's attention through fast_ops: decode steps as batched matmuls,
    # prompts as kernels.prompt_attention on GPUs (elsewhere flash attention without a mask)
    fast_attention: bool = True
    fused_norms: bool | None = None  # torch's fused rms_norm; None: on GPUs only
    own_layer_forward: bool = True  # decoder layers as two regions around attention (layers)
    # torch.compile them; None: on GPUs; a str or callable: the dynamo backend (tests)
    compile_layers: bool | str | Callable | None = None
    # the vision tower one photo at a time without padding, so attention needs no mask
    vision_per_photo: bool = True
    # launch step n+1 before reading back step n's tokens (False: read back at once)
    overlap_steps: bool = True
    # KV of shared prompt prefixes (the system prompt) kept on the device, in positions
    # (~225 KB each on the full-size model); 0: every prefill computes its whole prompt
    prefix_cache_tokens: int = 4096
    # the sliding layers keep a cached prefix of up to this many positions (the first one
    # that fits: the system prompt) once for all slots, not in every slot's ring: a decode
    # step reads it once and fewer ring positions a row (64 sequences of ~1,000 positions
    # after a 488-token prefix: ~640 of 1,024); 0: every slot keeps its own copy
    kept_prefix_positions: int = 512
    # the vision tower's output per photo kept on the device (photo_cache), so a follow-up's
    # earlier photo is not run through the tower again (~1.6 MB a photo of 280 soft
    # tokens); 0: none kept
    photo_cache_bytes: int = 512 * 2**20
    # expert weights as FP8 with per-row scales (fp8_experts), quantized in place at start:
    # half the bytes of a many-sequence decode step. Opt-in until the real checkpoint's
    # answers are checked with it; needs own_layer_forward and an Ada/Hopper GPU or the CPU
    fp8_experts: bool = False
    # the sliding layers' keys and values as FP8 e4m3 (kernels.decode_attention): half of
    # what a many-sequence decode step reads for them (docs/performance.md). Opt-in like
    # fp8_experts; needs fast_attention, and Triton on GPUs
    fp8_kv_cache: bool = False

    def __post_init__(self) -> None:
        if (
            self.max_slots < 1
            or self.max_seq_len < 2
            or self.max_prefill_seqs < 1
            or (self.kv_cache_bytes is not None and self.kv_cache_bytes < 1)
            or self.deep_queue_prefill_seqs < self.max_prefill_seqs
            or self.photo_cache_bytes < 0
            or (self.fp8_experts and not self.own_layer_forward)
            or (self.fp8_kv_cache and not self.fast_attention)
        ):
            raise ValueError(f"invalid runtime config: {self}")
