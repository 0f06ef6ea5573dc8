"""Is a prefill on the GPU the same whatever else is in its batch, and after the cached
prefix? Full-size random weights, three photo prompts. Prints and writes:
- prompt experts (grouped GEMMs + Triton sum) against a float32 loop over experts;
- last-token logits of the three prompts prefilled together against one at a time;
- each prompt after the system prompt's cached KV against whole, per decoder layer
  (its output at the prompt's own positions), and whether any logits are NaN.
Differences: the largest over the largest value, and the mean over the mean. With random
weights a rounding difference can flip a token's experts (near-equal router scores), so the
largest grows layer by layer; the batch-composition difference is the yardstick.

    python3 scripts/check_prefill.py --out bench-out/check-prefill.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import EnginePaths, RuntimeConfig
from inference.runtime.kernels import moe
from tools.bench import full_size_random_engine, make_requests


def relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest difference over the largest value, finite entries only (logits hold -inf
    where tokens are suppressed)."""
    finite = expected.isfinite()
    got, expected = got.float()[finite], expected.float()[finite]
    return float((got - expected).abs().max() / expected.abs().max())


def mean_relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    finite = expected.isfinite()
    got, expected = got.float()[finite], expected.float()[finite]
    return float((got - expected).abs().mean() / expected.abs().mean())


def experts_reference(experts, hidden, top_k_index, top_k_weights) -> torch.Tensor:
    out = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
    for expert in top_k_index.unique().tolist():
        token, slot = torch.where(top_k_index == expert)
        x = hidden[token].float()
        gate, up = (x @ experts.gate_up_proj[expert].float().T).chunk(2, dim=-1)
        y = (experts.act_fn(gate) * up) @ experts.down_proj[expert].float().T
        out.index_add_(0, token, y * top_k_weights[token, slot, None].float())
    return out


def check_experts(model) -> dict[str, float]:
    layer = model.model.language_model.layers[0]
    report = {}
    for tokens in (100, 488, 1455, 2919):
        shape = (tokens, layer.experts.hidden_dim)
        hidden = torch.randn(shape, device=model.device, dtype=model.dtype)
        _, weights, index = layer.router(hidden)
        experts = layer.experts
        got = moe.grouped_experts(hidden, index, weights, experts.gate_up_proj,
                                         experts.down_proj)  # fmt: skip
        report[f"{tokens} tokens"] = relative(got, experts_reference(layer.experts, hidden,
                                                                      index, weights))  # fmt: skip
    return report


class LayerOutputs:
    """Each decoder layer's output of the last forward, kept while `on`."""

    def __init__(self, model) -> None:
        self.outputs: list[torch.Tensor] = []
        self.on = False
        for layer in model.model.language_model.layers:
            layer.register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:
        if self.on:
            self.outputs.append((output[0] if isinstance(output, tuple) else output).clone())

    def record(self, fn, *args):
        self.outputs, self.on = [], True
        try:
            result = fn(*args)
        finally:
            self.on = False
        return result, self.outputs


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("bench-out/check-prefill.json"))
    parser.add_argument("--tiny", action="store_true", help="the tiny checkpoint on the CPU")
    args = parser.parse_args()
    if args.tiny:
        import tempfile

        from inference import EngineConfig, GemmaEngine
        from tools.tiny import write_tiny_checkpoint

        path = write_tiny_checkpoint(Path(tempfile.mkdtemp()))
        base = GemmaEngine.load(EngineConfig(model_path=path, device="cpu"))
    else:
        base = full_size_random_engine("cuda", 280)
    engine = BatchEngine(base, RuntimeConfig(max_slots=4), EnginePaths(graph_batch_sizes=(1,)))
    runner = engine.runner
    report: dict = {}
    if base.device.type == "cuda":  # Triton
        report["prompt experts vs float32 loop"] = check_experts(base.model)
    print(json.dumps(report, indent=1), flush=True)
    prepared = [engine.prepare(r) for r in make_requests(3, 1, seed=13)]
    inputs = [seq.inputs for seq in prepared]
    hooks = LayerOutputs(base.model)
    together, together_layers = hooks.record(runner.prefill, inputs, [0, 1, 2])
    for index, seq in enumerate(prepared):
        skip, length = len(seq.prefix), seq.num_prompt_tokens
        whole, whole_layers = hooks.record(runner.prefill, [seq.inputs], [0])
        after, after_layers = hooks.record(runner.prefill, [seq.inputs], [0], seq.prefix)
        after_layers = after_layers[-len(whole_layers) :]  # a miss also ran the prefix
        pairs = {
            "in a batch of 3 vs alone": (together[index : index + 1], whole,
                                         [t[index, skip:length] for t in together_layers]),
            "after the prefix vs whole": (after, whole, [a[0] for a in after_layers]),
        }  # fmt: skip
        for name, (logits, expected, layers) in pairs.items():
            report[f"prompt {index} {name}"] = row = {
                "logits max": relative(logits, expected),
                "logits mean": mean_relative(logits, expected),
                "same greedy token": bool((logits.argmax(-1) == expected.argmax(-1)).all()),
                "nan": bool(logits.isnan().any()),
                "layers max": [relative(a, w[0, skip:]) for a, w in zip(layers, whole_layers,
                                                                        strict=True)],
                "layers mean": [mean_relative(a, w[0, skip:]) for a, w in zip(layers,
                                                                              whole_layers,
                                                                              strict=True)],
            }  # fmt: skip
            print(f"prompt {index} {name}:", json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
