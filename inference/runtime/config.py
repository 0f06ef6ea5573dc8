"""Settings of the batching engine (no torch here, so settings code can import it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RuntimeConfig:
    """What an operator sets (bot/settings.py maps TRAVELBOT_* onto it)."""

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
    # torch.compile the layers; None: on GPUs; a str or callable: the dynamo backend (tests)
    compile_layers: bool | str | Callable | None = None
    seed: int = 0
    # KV of shared prompt prefixes (the system prompt) kept on the device, in positions
    # (~225 KB each on the full-size model); 0: every prefill computes its whole prompt
    prefix_cache_tokens: int = 4096
    # the vision tower's output per photo kept on the device (photo_cache), so a follow-up's
    # earlier photo is not run through the tower again (~1.6 MB a photo of 280 soft
    # tokens); 0: none kept
    photo_cache_bytes: int = 512 * 2**20
    # expert weights as FP8 with per-row scales (fp8_experts), quantized in place at start:
    # half the bytes of the expert weights a decode step reads. Opt-in until the real
    # checkpoint's answers are checked with it; needs an Ada/Hopper GPU or the CPU
    fp8_experts: bool = False
    # the sliding layers' keys and values as FP8 e4m3 (kernels.decode_attention): half of
    # what a many-sequence decode step reads for them (docs/performance.md). Opt-in like
    # fp8_experts; Triton's kernels on GPUs
    fp8_kv_cache: bool = False

    def __post_init__(self) -> None:
        if (
            self.max_slots < 1
            or self.max_seq_len < 2
            or self.max_prefill_seqs < 1
            or (self.kv_cache_bytes is not None and self.kv_cache_bytes < 1)
            or self.deep_queue_prefill_seqs < self.max_prefill_seqs
            or self.photo_cache_bytes < 0
        ):
            raise ValueError(f"invalid runtime config: {self}")


@dataclass(frozen=True)
class EnginePaths:
    """Which of the engine's own paths run, and their tuning: every one is on in serving.
    Tests turn each off to compare it with transformers' own (greedy tokens alike), and
    set small tuning numbers for the tiny model; an operator never needs to."""

    # the language model's attention through fast_ops: decode steps as batched matmuls,
    # prompts as kernels.prompt_attention on GPUs (elsewhere flash attention without a mask)
    attention: bool = True
    fused_norms: bool | None = None  # torch's fused rms_norm; None: on GPUs only
    own_layers: bool = True  # decoder layers as two regions around attention (layers)
    # the vision tower one photo at a time without padding, so attention needs no mask
    packed_photos: bool = True
    # launch step n+1 before reading back step n's tokens (False: read back at once)
    overlap_steps: bool = True
    graph_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 24, 32, 48, 64)
    # a decode step attends to the shortest of these lengths that holds all its rows (one
    # graph per batch size and length); None: 512, 768, ... and max_seq_len
    attend_lengths: tuple[int, ...] | None = None
    # the sliding layers keep a cached prefix of up to this many positions (the first one
    # that fits: the system prompt) once for all slots, not in every slot's ring: a decode
    # step reads it once and fewer ring positions a row; 0: every slot keeps its own copy;
    # None: as many as the system prompt takes in this checkpoint's tokenizer (a fixed size
    # would silently keep nothing once a prompt or tokenizer makes it longer)
    kept_prefix_positions: int | None = None

    def check(self, runtime: RuntimeConfig) -> None:
        """FP8 experts run only in the own layers, FP8 keys and values only through the own
        attention."""
        if (runtime.fp8_experts and not self.own_layers) or (
            runtime.fp8_kv_cache and not self.attention
        ):
            raise ValueError(f"{runtime} needs the engine's own paths, not {self}")


def compile_backend(compile_layers: bool | str | Callable) -> str | Callable:
    """The dynamo backend a true `compile_layers` names (True: inductor)."""
    return "inductor" if compile_layers is True else compile_layers
