"""Cost of streaming one 1000-token answer through OutputSplitter (CPU, tiny tokenizer).

    python scripts/bench_splitter.py

The splitter runs on the engine thread between decode steps, once per sequence per step.
"""

from __future__ import annotations

import json
import time

from inference.output import OutputSplitter
from inference.tiny import build_tokenizer


def main() -> None:
    tokenizer = build_tokenizer()
    text = "Wiener Schnitzel mit Kartoffelsalat 出口 入口 Ausgang — 🚪 " * 80
    ids = tokenizer.encode(text, add_special_tokens=False)[:1000]
    byte_ids = frozenset(
        i for token, i in tokenizer.get_vocab().items() if len(token) == 6 and token[:3] == "<0x"
    )
    splitter = OutputSplitter(
        lambda chunk: tokenizer.decode(chunk, skip_special_tokens=True),
        channel_open_id=-1,
        channel_close_id=-2,
        ignored_ids=set(tokenizer.all_special_ids),
        byte_ids=byte_ids,
    )
    started = time.perf_counter()
    deltas = [d.text for token in ids if (d := splitter.push(token)) is not None]
    deltas += [d.text for d in splitter.flush()]
    seconds = time.perf_counter() - started
    assert "".join(deltas).strip() == splitter.answer, "streamed text differs from the final"
    result = {"tokens": len(ids), "total_ms": round(seconds * 1e3, 2),
              "us_per_token": round(seconds * 1e6 / len(ids), 1)}  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
