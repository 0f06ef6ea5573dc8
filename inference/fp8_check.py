"""Check FP8 experts on a checkpoint before turning them on (`TRAVELBOT_FP8_EXPERTS`).

The same sample photos (signs and menus, answers in several languages) are answered by
the batching engine with the checkpoint's bf16 experts and then with FP8 ones, greedily.
For each answer: where the FP8 answer first leaves the bf16 one, and, with the bf16
answer fed to both models (teacher forcing, so one early difference does not decide the
rest), how often FP8's top token is bf16's and the KL divergence of FP8's next-token
distribution from bf16's at every position. Both models run the engine's own layers, so
only the experts' weights differ. Prints a table, writes JSON, and exits 1 when the mean
KL or the top-token agreement miss the given bounds (the defaults lie between what 8-bit
and 4-bit weight quantizations of LLMs typically measure on these metrics).

    travelbot check-fp8 --model /models/gemma-4-26B-A4B-it [--photos 8] [--new-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict, dataclass, replace

import torch

from inference.bench import load_engine, make_requests
from inference.engine import GemmaEngine
from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import RuntimeConfig
from inference.types import Request


@dataclass
class Comparison:
    """One photo's answer with bf16 experts against FP8 ones."""

    language: str
    tokens: int  # of the bf16 answer
    same_until: int  # the first token where the FP8 answer differs (tokens: none)
    top_token_agreement: float  # teacher forced: FP8's top token is bf16's, share
    kl_mean: float  # teacher forced: KL(bf16 || FP8) per position, nats
    kl_max: float
    bf16_text: str
    fp8_text: str


def greedy_answers(engine: BatchEngine, requests: list[Request]) -> list[list[int]]:
    """Each request answered greedily by the batching engine (all at once): token ids."""
    seqs = [engine.prepare(request) for request in requests]
    for seq in seqs:
        engine.add(seq, lambda event: None, lambda: False)
    while engine.num_active:
        engine.step()
    return [list(seq.output_ids) for seq in seqs]


@torch.inference_mode()
def answer_logprobs(base: GemmaEngine, request: Request, answer: list[int]) -> torch.Tensor:
    """log-softmax of the model's next-token logits at each answer position [T, vocab]
    (float32, on the CPU), with the prompt and `answer` fed in one forward pass."""
    inputs = base.prepare_inputs(request)
    device = inputs["input_ids"].device
    fed = torch.tensor([answer[:-1]], dtype=torch.long, device=device)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], fed], dim=1)
    for name in ("attention_mask", "mm_token_type_ids"):
        if name in inputs:
            extra = torch.full_like(fed, 1 if name == "attention_mask" else 0)
            inputs[name] = torch.cat([inputs[name], extra.to(inputs[name].dtype)], dim=1)
    output = base.model(**inputs, use_cache=False, logits_to_keep=len(answer))
    logits = output.logits[0].float()
    return torch.log_softmax(logits, dim=-1).cpu()


def answers_and_logprobs(
    base: GemmaEngine, runtime: RuntimeConfig, requests: list[Request], forced: list | None
) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Greedy answers with this runtime's engine, and the log-probs along `forced` answers
    (None: its own), through the engine's layers; the engine is closed after."""
    engine = BatchEngine(base, runtime)
    try:
        answers = greedy_answers(engine, requests)
        forced = forced or answers
        logprobs = [
            answer_logprobs(base, request, answer)
            for request, answer in zip(requests, forced, strict=True)
        ]
    finally:
        engine.close()
    return answers, logprobs


def compare(
    base: GemmaEngine, requests: list[Request], runtime: RuntimeConfig, variant: RuntimeConfig
) -> list[Comparison]:
    """`runtime`'s answers (bf16 experts) against `variant`'s, photo by photo. A variant with
    FP8 experts quantizes the model in place: it runs second."""
    reference, reference_logprobs = answers_and_logprobs(base, runtime, requests, None)
    answers, logprobs = answers_and_logprobs(base, variant, requests, reference)
    decode = base.tokenizer.decode
    rows = []
    for request, expected, got, p, q in zip(
        requests, reference, answers, reference_logprobs, logprobs, strict=True
    ):
        pairs = enumerate(zip(expected, got, strict=False))
        same = next((i for i, (a, b) in pairs if a != b), min(len(expected), len(got)))
        kl = (p.exp() * (p - q)).sum(dim=-1).clamp(min=0)  # per position
        agreement = float((q.argmax(-1) == p.argmax(-1)).float().mean())
        rows.append(
            Comparison(
                language=request.language,
                tokens=len(expected),
                same_until=same,
                top_token_agreement=round(agreement, 4),
                kl_mean=float(kl.mean()),
                kl_max=float(kl.max()),
                bf16_text=decode(expected, skip_special_tokens=True),
                fp8_text=decode(got, skip_special_tokens=True),
            )
        )
    return rows


def summary(rows: list[Comparison]) -> dict:
    return {
        "identical_answers": sum(r.same_until == r.tokens for r in rows),  # or longer
        "photos": len(rows),
        "top_token_agreement": round(statistics.fmean(r.top_token_agreement for r in rows), 4),
        "kl_mean": statistics.fmean(r.kl_mean for r in rows),
        "kl_max": max(r.kl_max for r in rows),
    }


def main(args: argparse.Namespace) -> int:
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.full_size_random, args.experts_implementation = False, None
    base = load_engine(args)
    requests = make_requests(args.photos, args.new_tokens, seed=7)
    longest = max(int(base.prepare_inputs(r)["input_ids"].shape[1]) for r in requests)
    runtime = RuntimeConfig(max_slots=args.photos, max_seq_len=longest + args.new_tokens + 1)
    rows = compare(base, requests, runtime, replace(runtime, fp8_experts=True))
    total = summary(rows)
    passed = total["kl_mean"] <= args.max_mean_kl and (
        total["top_token_agreement"] >= args.min_agreement
    )
    result = {"model": str(args.model or "tiny"), "device": args.device, **total,
              "passed": passed, "bounds": {"max_mean_kl": args.max_mean_kl,
                                           "min_agreement": args.min_agreement},
              "photos_compared": [asdict(r) for r in rows]}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(f"{'lang':<6} {'tokens':>6} {'same until':>10} {'top agree':>9} {'KL mean':>9} "
          f"{'KL max':>8}")  # fmt: skip
    for r in rows:
        print(f"{r.language:<6} {r.tokens:>6} {r.same_until:>10} {r.top_token_agreement:>9.3f} "
              f"{r.kl_mean:>9.5f} {r.kl_max:>8.4f}")  # fmt: skip
    print(
        f"\n{total['identical_answers']}/{total['photos']} answers identical, top token agrees "
        f"{total['top_token_agreement']:.1%}, KL mean {total['kl_mean']:.5f} nats (bounds: "
        f"≤{args.max_mean_kl}, ≥{args.min_agreement:.0%}): {'PASS' if passed else 'FAIL'}"
        f"\nwrote {args.out}"
    )
    return 0 if passed else 1
