"""The sliding layers' prompt attention kernel (prompt_attention), run by Triton's
interpreter on the CPU against float32 attention under the explicit mask (causal after a
cached prefix, an image's tokens seeing the whole image; or causal, as global layers):
grouped query heads, tiles across rows and images, queries in the layers' transposed
layout. A subprocess, because the
interpreter is chosen when Triton loads."""

from __future__ import annotations

import pytest
import torch

from inference.runtime.gemma4.fast_ops import visible_ends
from tests.inference.runtime.interpreted import assert_small, run_interpreted

pytest.importorskip("triton")

SCRIPT = """
import json, torch
from inference.runtime.gemma4.fast_ops import visible_ends
from tests.inference.runtime.interpreted import assert_small, run_interpreted
from inference.runtime.kernels.prompt_attention import prompt_attention, reference_attention

torch.manual_seed(0)
errors = {}
# (rows, query heads, KV heads, prefix, prompt length, head size, image spans per row,
# sliding window: 0 none, or shorter than the prompts)
for rows, heads, kv_heads, prefix, length, dim, spans, window in [
    (2, 4, 2, 0, 70, 16, [[(5, 30)], [(40, 69)]], 0),
    (3, 4, 2, 37, 45, 32, [[(3, 20), (25, 40)], [], [(0, 45)]], 0),
    (1, 2, 1, 70, 9, 24, [[]], 0),  # a head size not a power of 2; a prefix over 64 keys
    (2, 16, 2, 21, 40, 32, None, 0),  # a global layer: causal, 8 query heads per KV head
    # past the window: a row's early keys and the prefix drop out; an image longer than
    # the window sees its start only within it (the window applies over the image rule)
    (2, 4, 2, 37, 150, 32, [[(10, 90)], [(120, 140)]], 48),
    (2, 4, 2, 0, 130, 16, [[], [(0, 20), (60, 125)]], 40),
]:
    # as the layers give them: [B, H, L, D] views of [B, L, H, D]
    query = torch.randn(rows, length, heads, dim, dtype=torch.bfloat16).transpose(1, 2)
    key, value = torch.randn(2, rows, kv_heads, prefix + length, dim, dtype=torch.bfloat16)
    ends = None if spans is None else visible_ends(spans, prefix, length)
    key[1:, :, :prefix], value[1:, :, :prefix] = key[:1, :, :prefix], value[:1, :, :prefix]
    expected = reference_attention(query, key, value, ends, dim**-0.5, window)
    name = (f"{rows}x{heads}/{kv_heads} heads, prefix {prefix}, {length} tokens, dim {dim}, "
            f"window {window}")
    error = lambda got: ((got.float() - expected).abs().max() / expected.abs().max()).item()
    errors[name] = error(prompt_attention(query, key, value, ends, dim**-0.5, None, window))
    if prefix:  # the shared prefix's keys and values apart, one copy for all rows
        apart = (key[:1, :, :prefix], value[:1, :, :prefix])
        errors[name + ", prefix apart"] = error(prompt_attention(
            query, key[:, :, prefix:], value[:, :, prefix:], ends, dim**-0.5, apart, window))
print(json.dumps(errors))
"""


def test_prompt_attention_kernel_equals_float32_attention_under_the_mask() -> None:
    assert_small(run_interpreted(SCRIPT), count=10)


def test_visible_ends_are_the_next_position_or_the_images_end() -> None:
    ends = visible_ends([[(1, 3)], []], prefix=10, length=5)
    assert ends.tolist() == [[11, 13, 13, 14, 15], [11, 12, 13, 14, 15]]
    assert ends.dtype == torch.int32


ENGINE_SCRIPT = """
import io, json, sys, torch
from inference import EngineConfig, GemmaEngine, Request
from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import RuntimeConfig
from tools.samples import draw_menu, draw_sign

def png(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()

base = GemmaEngine.load(EngineConfig(model_path=sys.argv[1], device="cpu"))
for module in [base.model.config.get_text_config()] + [
        layer.self_attn for layer in base.model.model.language_model.layers]:
    if module.sliding_window and sys.argv[2] == "wide":
        module.sliding_window = 2048  # wider than the prompts, as 1,024 is for a photo's
engine = BatchEngine(base, RuntimeConfig(max_slots=2, max_seq_len=1024, cuda_graphs=False))
runner = engine.runner
seqs = [
    engine.prepare(Request(language="de", images=(png(draw_sign(640, 480)),), question="Wo?")),
    engine.prepare(Request(language="th", images=(png(draw_menu(360, 480, seed=2)),))),
]
inputs, prefix = [seq.inputs for seq in seqs], seqs[0].prefix
from inference.runtime.kernels import prompt_attention
kernel_calls, windowed = [], []
original = prompt_attention.prompt_attention
def recorded(query, key, value, ends, scale, prefix, window):
    kernel_calls.append(prefix is not None)  # the prefix apart
    total = key.shape[2] + (prefix[0].shape[2] if prefix is not None else 0)
    windowed.append(0 < window < total)
    return original(query, key, value, ends, scale, prefix, window)
prompt_attention.prompt_attention = recorded
results = {}
for kernel in (False, True):
    runner.prompt_kernel = kernel
    logits = runner.prefill(inputs, [0, 1], prefix)  # the prefix too, the first time
    keys = [k[:2].clone() for k in runner.cache.keys]
    results[kernel] = (logits, keys)
runner.prefixes.clear()
logits, keys = results[False]
got_logits, got_keys = results[True]
finite = logits.isfinite()  # suppressed tokens are -inf in both
assert torch.equal(finite, got_logits.isfinite())
errors = {"logits": ((got_logits - logits)[finite].abs().max() / logits[finite].abs().max()).item()}
errors["keys"] = max(((g - k).abs().max() / k.abs().max()).item()
                     for g, k in zip(got_keys, keys))
errors["layers_with_the_prefix_apart"] = sum(kernel_calls)
errors["kernel_calls"] = len(kernel_calls)
errors["windowed_calls"] = sum(windowed)
print(json.dumps(errors))
"""


@pytest.mark.parametrize("window", ["wide", "as configured"])
def test_a_prefill_through_the_kernel_equals_the_flash_path(tiny_model_dir, window) -> None:
    """The runner's plumbing: visible ends after the cached prefix, whose keys and values
    the kernel reads apart, in all layers (Triton's interpreter); the same logits and
    stored keys (the prefix's stored in the slots too). With the tiny model's window (32
    positions) the prompts, and their photos, are longer than it, as a follow-up's are
    than Gemma 4's 1,024: the flash path's attention there is SDPA under transformers'
    own mask."""
    errors = run_interpreted(ENGINE_SCRIPT, str(tiny_model_dir), window)
    assert errors["logits"] < 1e-4 and errors["keys"] < 1e-4, errors
    # the second prefill found the prefix cached: every layer read its keys where they are
    assert errors["kernel_calls"] == errors["layers_with_the_prefix_apart"] > 0, errors
    # the sliding layers' calls with the window inside the prompts, as configured
    assert (errors["windowed_calls"] > 0) == (window == "as configured"), errors
