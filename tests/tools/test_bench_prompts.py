"""The bench's prompts are as long as Gemma 4's tokenizer would make them, whatever
tokenizer is loaded (tools/bench_prompts.py)."""

from __future__ import annotations

import copy
import json

from tokenizers import Tokenizer

from inference import GemmaEngine
from inference.prompts import SYSTEM_PROMPT
from tools.bench_prompts import PromptFitter, estimated_tokens
from tools.bench_requests import make_requests


def coarser_tokenizer(engine: GemmaEngine):
    """The tiny tokenizer with most of its merges gone: it reads the system prompt in about
    three times as many tokens (the tiny one learned it, so reads it in fewer than Gemma's)."""
    tokenizer = copy.deepcopy(engine.tokenizer)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    spec["model"]["merges"] = spec["model"]["merges"][:200]
    tokenizer._tokenizer = Tokenizer.from_str(json.dumps(spec))
    return tokenizer


def test_two_tokenizers_give_the_same_prompt_lengths(tiny_engine: GemmaEngine) -> None:
    coarse = GemmaEngine(tiny_engine.model, coarser_tokenizer(tiny_engine),
                         tiny_engine.image_processor)  # fmt: skip
    plain = make_requests(4, 4)  # de, en, fr, ja
    natural = [[], []]
    fitted = [[], []]
    for column, engine in enumerate((tiny_engine, coarse)):
        fitter = PromptFitter(engine, plain[0].images[0])
        for request in plain:
            inputs, prefix = engine.prepare_with_prefix(request)
            natural[column].append((int(inputs["input_ids"].shape[1]), len(prefix)))
            shaped = fitter.shape(request.language).request(request)
            inputs, prefix = engine.prepare_with_prefix(shaped)
            fitted[column].append((int(inputs["input_ids"].shape[1]), len(prefix)))
            assert shaped.chat[-1].images == request.images  # the photo, the template's
    # the prompts as the bot sends them differ by tokenizer; the bench's are alike
    assert natural[0] != natural[1]
    assert fitted[0] == fitted[1]
    # the shared prefix is the system prompt's estimate (~4 characters a token)
    special = tiny_engine.special_tokens
    estimate = estimated_tokens(SYSTEM_PROMPT, special)
    assert all(estimate < prefix <= estimate + 8 for _, prefix in fitted[0])
    # the languages' names are of different lengths, so are their prompts
    assert len({tokens for tokens, _ in fitted[0]}) > 1


def test_estimate_counts_special_tokens_once_and_text_by_characters(
    tiny_engine: GemmaEngine,
) -> None:
    special = tiny_engine.special_tokens
    # <|turn>, "system\nabcdefgh" (15 characters), <turn|>, "\n"
    assert estimated_tokens("<|turn>system\nabcdefgh<turn|>\n", special) == 1 + 4 + 1 + 1
    assert estimated_tokens("", special) == 0
