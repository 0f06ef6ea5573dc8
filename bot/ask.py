"""Glue for `travelbot ask`: settings in, inference.ask out."""

from __future__ import annotations

import argparse
import sys

from bot.__main__ import engine_config, runtime_config
from bot.logging import configure_logging
from bot.settings import Settings
from inference import ModelNotFound


def ask(settings: Settings, args: argparse.Namespace) -> int:
    from inference.ask import run_ask

    # INFO: the model load (minutes for the full-size model) shows its progress on stderr
    configure_logging(log_format=settings.log_format, level=settings.log_level)
    try:
        config = engine_config(settings)
    except ModelNotFound as exc:
        print(exc, file=sys.stderr)
        return 2
    return run_ask(
        config,
        args.image,
        language=args.lang,
        question=args.question,
        think=args.think,
        max_new_tokens=args.max_new_tokens or settings.max_new_tokens,
        greedy=args.greedy,
        runtime=runtime_config(settings),
    )
