"""Check FP8 experts on a checkpoint before turning them on (`TRAVELBOT_FP8_EXPERTS`).

The same sample photos (signs and menus, answers in several languages) are answered by
the batching engine with the checkpoint's bf16 experts and then with FP8 ones (with
`--kv-cache`, FP8 keys and values too), greedily. For each answer: where the FP8 answer
first leaves the bf16 one, and, with the bf16 answer fed to both engines (teacher forcing,
so one early difference does not decide the rest), how often FP8's top token is bf16's
and the KL divergence of FP8's next-token distribution from bf16's at every position. The
log-probs come from the engine's own prefill and decode steps, as served. Prints a table,
writes JSON, and exits 1 when the mean KL or the top-token agreement miss the given
bounds (the defaults lie between what 8-bit and 4-bit weight quantizations of LLMs
typically measure on these metrics).

    travelbot check-fp8 --model /models/gemma-4-26B-A4B-it [--photos 8] [--new-tokens 128]
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import asdict, dataclass, replace

import torch

from inference.engine import GemmaEngine
from inference.runtime.batch_engine import BatchEngine
from inference.runtime.config import RuntimeConfig
from inference.runtime.sequence import Sequence
from inference.types import Request
from tools.bench import load_engine, make_requests, write


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


def greedy_answers(engine: BatchEngine, seqs: list[Sequence]) -> list[list[int]]:
    """Prepared requests answered greedily by the batching engine (all at once): token ids."""
    for seq in seqs:
        engine.add(seq, lambda event: None, lambda: False)
    while engine.num_active:
        engine.step()
    return [list(seq.output_ids) for seq in seqs]


@torch.inference_mode()
def forced_logprobs(
    engine: BatchEngine, seqs: list[Sequence], inputs: list[dict], answers: list[list[int]]
) -> list[torch.Tensor]:
    """Each prepared request's next-token log-probs [len(answer), vocab] (float32, on the
    CPU) along its given answer, as the engine computes them while serving: a prefill of
    its `inputs`, then decode steps fed the answer's tokens instead of its own (teacher
    forcing)."""
    runner, rows = engine.runner, len(seqs)
    steps: list[list[torch.Tensor]] = [[] for _ in range(rows)]
    for slot, (seq, prompt) in enumerate(zip(seqs, inputs, strict=True)):
        # one at a time: prompts may have different prefixes
        steps[slot].append(runner.prefill([prompt], [slot], seq.prefix)[0])
    longest = max(len(answer) for answer in answers)
    for step in range(longest - 1):
        fed = [answer[min(step, len(answer) - 1)] for answer in answers]  # past its end: ignored
        logits = runner.decode([seq.num_prompt_tokens + step for seq in seqs], fed)
        logits = logits.to("cpu", copy=True)  # a CUDA graph's output: the next step writes over it
        for row in range(rows):
            steps[row].append(logits[row])
    return [
        torch.log_softmax(torch.stack(row[: len(answer)]).float(), dim=-1).cpu()
        for row, answer in zip(steps, answers, strict=True)
    ]


def answers_and_logprobs(
    base: GemmaEngine, runtime: RuntimeConfig, requests: list[Request], forced: list | None
) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Greedy answers with this runtime's engine, and its log-probs along `forced` answers
    (None: its own); each photo prepared once. The engine is closed after."""
    engine = BatchEngine(base, runtime)
    try:
        seqs = [engine.prepare(request) for request in requests]
        inputs = [seq.inputs for seq in seqs]  # the engine drops them once prefilled
        answers = greedy_answers(engine, seqs)
        logprobs = forced_logprobs(engine, seqs, inputs, forced or answers)
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
        # per position; tokens the engine suppresses are -inf in both: no term
        kl = torch.where(p > -torch.inf, p.exp() * (p - q), 0.0).sum(dim=-1).clamp(min=0)
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
        # FP8's answer equals bf16's up to bf16's end
        "identical_answers": sum(r.same_until == r.tokens for r in rows),
        "photos": len(rows),
        "top_token_agreement": round(statistics.fmean(r.top_token_agreement for r in rows), 4),
        "kl_mean": statistics.fmean(r.kl_mean for r in rows),
        "kl_max": max(r.kl_max for r in rows),
    }


def main(args: argparse.Namespace) -> int:
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    base = load_engine(args)
    requests = make_requests(args.photos, args.new_tokens, seed=7)
    runtime = RuntimeConfig(max_slots=args.photos)
    variant = replace(runtime, fp8_experts=True, fp8_kv_cache=args.kv_cache)
    rows = compare(base, requests, runtime, variant)
    total = summary(rows)
    passed = total["kl_mean"] <= args.max_mean_kl and (
        total["top_token_agreement"] >= args.min_agreement
    )
    model = "full-size random" if args.full_size_random else str(args.model or "tiny")
    result = {"model": model, "device": args.device,
              "fp8_kv_cache": args.kv_cache, **total,
              "passed": passed, "bounds": {"max_mean_kl": args.max_mean_kl,
                                           "min_agreement": args.min_agreement},
              "photos_compared": [asdict(r) for r in rows]}  # fmt: skip
    write(args.out, result)
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


if __name__ == "__main__":  # python -m tools.fp8_check (where the bot's packages are absent)
    from tools.bench_args import add_fp8_check_arguments

    parser = argparse.ArgumentParser(prog="python -m tools.fp8_check", description=__doc__)
    add_fp8_check_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
