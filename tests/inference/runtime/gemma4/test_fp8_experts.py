"""FP8 expert weights: the quantization's bounds, and the batching engine on a tiny model
quantized in place, whose greedy tokens must equal generate() on a copy of the model that
holds the dequantized weights (the FP8 path computes with exactly those weights)."""

from __future__ import annotations

import pytest
import torch

from inference import Finished, GemmaEngine
from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import EnginePaths, RuntimeConfig
from inference.runtime.gemma4 import fp8_experts
from tests.inference.runtime.test_batch_engine import requests, serve


def test_quantize_keeps_each_value_within_fp8_rounding() -> None:
    weight = torch.randn(3, 16, 64) * torch.logspace(-3, 2, 16)[None, :, None]
    weight[1, 5] = 0.0
    values, scale = fp8_experts.quantize(weight)
    assert values.dtype == fp8_experts.FP8 and scale.shape == (3, 16)
    back = fp8_experts.dequantize(values, scale, torch.float32)
    # e4m3: 3 mantissa bits (relative 2^-4), subnormals below 2^-6 of the row's scale
    bound = weight.abs() / 16 + scale[..., None] * 2**-9
    assert ((back - weight).abs() <= bound).all()
    # each row's largest magnitude is FP8's largest value, so it comes back exactly
    row_max = weight.abs().amax(-1)
    assert torch.allclose(back.abs().amax(-1), row_max, rtol=1e-6)
    assert scale[1, 5] == 1.0 and (back[1, 5] == 0).all()


def test_quantize_maps_extreme_rows_to_finite_values() -> None:
    weight = torch.tensor([[[1e-30, -3e4, 2.5, 0.0]]])
    values, scale = fp8_experts.quantize(weight)
    assert torch.isfinite(values.float()).all()
    assert values.float().abs().max() == fp8_experts.FP8_MAX
    assert scale.item() == pytest.approx(3e4 / fp8_experts.FP8_MAX)


@pytest.fixture(scope="module", params=["plain layers", "compiled layer regions"])
def fp8_engine(request, engine_config):
    """A tiny model of its own (quantized in place), and the reference model with the same
    weights dequantized."""
    quantized, reference = GemmaEngine.load(engine_config), GemmaEngine.load(engine_config)
    for layer in reference.model.model.language_model.layers:
        for name in fp8_experts.WEIGHTS:
            weight = getattr(layer.experts, name)
            weight.data = fp8_experts.dequantize(*fp8_experts.quantize(weight), weight.dtype)
    runtime = RuntimeConfig(
        max_slots=3,
        max_seq_len=1024,
        max_prefill_seqs=2,
        cuda_graphs=False,
        compile_layers="eager" if request.param == "compiled layer regions" else False,
        fp8_experts=True,
    )
    engine = BatchEngine(quantized, runtime)
    yield engine, reference
    engine.close()


def test_engine_with_fp8_experts_equals_generate_on_the_dequantized_weights(
    fp8_engine,
) -> None:
    engine, reference = fp8_engine
    experts = engine.base.model.model.language_model.layers[0].experts
    assert experts.gate_up_proj.dtype == experts.down_proj.dtype == fp8_experts.FP8
    arrivals = requests()
    results = serve(engine, arrivals)
    for index, (_, request) in enumerate(arrivals):
        finished = results[index][-1]
        assert isinstance(finished, Finished)
        expected = reference.generate(request, lambda event: None, lambda: False)
        assert finished.token_ids == expected.token_ids, f"request {index} differs"


def test_quantizing_in_place_saves_the_experts_memory(engine_config) -> None:
    model = GemmaEngine.load(engine_config).model
    experts = [layer.experts for layer in model.model.language_model.layers]
    before = sum(e.gate_up_proj.nbytes + e.down_proj.nbytes for e in experts)
    saved = fp8_experts.quantize_experts(model)
    assert fp8_experts.quantize_experts(model) == 0  # already FP8: nothing to do
    # float32 tiny model: FP8 is a quarter of it, plus a float32 scale per row
    rows = sum(e.gate_up_proj.shape[1] + e.down_proj.shape[1] for e in experts) * len(
        experts[0].gate_up_proj
    )
    assert saved == before - before // 4 - rows * 4
    assert all("gate_up_proj" not in dict(e.named_parameters()) for e in experts)


def test_fp8_experts_need_the_engines_own_layers() -> None:
    with pytest.raises(ValueError):
        EnginePaths(own_layers=False).check(RuntimeConfig(fp8_experts=True))


def test_restoring_saved_experts_gives_the_model_back_exactly(engine_config) -> None:
    base = GemmaEngine.load(engine_config)  # its own copy: quantized in place below
    ids = torch.tensor([[2, 10, 20, 30, 40]])
    with torch.inference_mode():
        before = base.model(input_ids=ids).logits
    saved = fp8_experts.experts_on_cpu(base.model)
    fp8_experts.quantize_experts(base.model)
    experts = base.model.model.language_model.layers[0].experts
    assert fp8_experts.is_quantized(experts)
    fp8_experts.restore_experts(base.model, saved)
    assert not fp8_experts.is_quantized(experts) and not hasattr(experts, "compute_dtype")
    assert "gate_up_proj" in dict(experts.named_parameters())
    assert not hasattr(experts, "gate_up_proj_scale")
    with torch.inference_mode():
        assert torch.equal(base.model(input_ids=ids).logits, before)
