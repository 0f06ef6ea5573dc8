"""`travelbot ask IMAGE`: one question to the model from a shell, streamed to stdout."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TextIO

from inference.engine import EngineConfig, create_engine
from inference.images import normalize_image
from inference.runtime.config import RuntimeConfig
from inference.types import Delta, Finished, ImageRejected, Request, Sampling
from inference.worker import Worker


async def ask(
    config: EngineConfig,
    image_path: Path,
    *,
    language: str = "en",
    question: str | None = None,
    think: bool = False,
    max_new_tokens: int = 1024,
    greedy: bool = False,
    runtime: RuntimeConfig | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print the answer as it streams; return a process exit code."""
    try:
        image = normalize_image(image_path.read_bytes())
    except (OSError, ImageRejected) as exc:
        print(f"cannot use {image_path}: {exc}", file=sys.stderr)
        return 2
    request = Request(
        language=language,
        question=question,
        images=(image,),
        think=think,
        max_new_tokens=max_new_tokens,
        sampling=Sampling(temperature=0.0) if greedy else Sampling(),
    )
    worker = Worker(lambda: create_engine(config, runtime), max_queue=1)
    await worker.start()
    try:
        thinking = False
        async for event in worker.submit(request):
            if isinstance(event, Delta):
                if event.is_thought != thinking:
                    thinking = event.is_thought
                    out.write("[thinking] " if thinking else "\n[answer] ")
                out.write(event.text)
                out.flush()
            elif isinstance(event, Finished):
                out.write("\n")
                print(
                    f"({event.num_prompt_tokens} prompt tokens, {event.num_output_tokens} "
                    f"generated, {event.finish_reason})",
                    file=sys.stderr,
                )
    finally:
        await worker.stop()
    return 0


def run_ask(config: EngineConfig, image_path: Path, **kwargs) -> int:
    return asyncio.run(ask(config, image_path, **kwargs))
