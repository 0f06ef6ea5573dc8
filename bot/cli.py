"""The `travelbot` command: run the bot, ask the model from a shell, make test assets."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.settings import Settings

MODEL_HELP = (
    "model folder, or a Hugging Face repo id in the local cache, e.g. google/gemma-4-26B-A4B-it "
    "(default: TRAVELBOT_MODEL_PATH)"
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="travelbot", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the Telegram bot (polling, or a webhook)")
    run.add_argument("--model", help=MODEL_HELP)
    run.add_argument(
        "--webhook",
        metavar="URL",
        help="receive updates at this public https URL (default: TRAVELBOT_WEBHOOK_URL; "
        "unset: polling)",
    )

    ask = commands.add_parser("ask", help="ask the model about a photo, print the answer")
    ask.add_argument("image", type=Path)
    ask.add_argument("--lang", default="en", help="reply language code (default: en)")
    ask.add_argument("--question", help="a question about the photo (default: explain it)")
    ask.add_argument("--think", action="store_true", help="let the model think first")
    ask.add_argument("--model", help=MODEL_HELP)
    ask.add_argument("--max-new-tokens", type=int, default=None)
    ask.add_argument("--greedy", action="store_true", help="no sampling (repeatable output)")

    tiny = commands.add_parser("tiny-checkpoint", help="write the tiny random Gemma 4 checkpoint")
    tiny.add_argument("directory", type=Path)

    sample = commands.add_parser("sample-image", help="draw a sign or menu photo to test with")
    sample.add_argument("output", type=Path)
    sample.add_argument("--kind", choices=("sign", "menu"), default="sign")

    serve = commands.add_parser("serve", help="serve the engine as an OpenAI-compatible API")
    serve.add_argument("--model", help=MODEL_HELP)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--served-model-name", help="the `model` clients name (default: TRAVELBOT_OPENAI_MODEL)"
    )
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve on a non-loopback --host without TRAVELBOT_SERVE_API_KEY (anyone who "
        "reaches the port may use the model)",
    )

    bench = commands.add_parser("bench", help="benchmark generate() and the batching engine")
    from tools.bench_args import add_arguments

    add_arguments(bench)

    check = commands.add_parser(
        "check-fp8", help="answers with FP8 experts against bf16 ones, before turning them on"
    )
    from tools.bench_args import add_fp8_check_arguments

    add_fp8_check_arguments(check)

    evaluate = commands.add_parser(
        "eval", help="score answers on generated photos of signs and menus, per script"
    )
    from evaluation.cli import add_arguments as add_eval_arguments

    add_eval_arguments(evaluate)

    args = parser.parse_args(argv)
    if args.command == "run":
        from bot.__main__ import main as run_bot

        run_bot(settings_for(args))
    elif args.command == "ask":
        from bot.ask import ask as ask_model

        sys.exit(ask_model(settings_for(args), args))
    elif args.command == "tiny-checkpoint":
        from tools.tiny import write_tiny_checkpoint

        print(write_tiny_checkpoint(args.directory))
    elif args.command == "serve":
        from bot.serve import serve_engine

        sys.exit(serve_engine(settings_for(args), args))
    elif args.command == "bench":
        from tools.bench import main as bench_main

        sys.exit(bench_main(args))
    elif args.command == "check-fp8":
        from tools.fp8_check import main as check_main

        sys.exit(check_main(args))
    elif args.command == "eval":
        from evaluation.cli import main as eval_main

        sys.exit(eval_main(args))
    elif args.command == "sample-image":
        from tools.samples import write_sample

        print(write_sample(args.output, kind=args.kind))


def settings_for(args: argparse.Namespace) -> Settings:
    """The settings, with the command's options over them. Only the commands that use them
    read them: a wrong TRAVELBOT_* variable must not stop `tiny-checkpoint` or `bench`."""
    from bot.settings import load_settings

    settings = load_settings()
    if getattr(args, "model", None):
        settings = settings.model_copy(update={"model_path": args.model})
    if getattr(args, "webhook", None):
        settings = settings.model_copy(update={"webhook_url": args.webhook})
    return settings


def installed_version() -> str:
    """The installed package's version (pyproject.toml's, as pip installed it)."""
    try:
        return version("travelbot")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"
