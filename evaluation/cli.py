"""`travelbot eval`: answer the generated photo set, print the scores per script, write them
as JSON, compare two runs, and fail under thresholds.

    travelbot eval --model /models/gemma-4 --out eval-bf16.json
    travelbot eval --model /models/gemma-4 --fp8-experts --out eval-fp8.json
    travelbot eval --compare eval-bf16.json eval-fp8.json
    travelbot eval --openai http://vllm-0:8000/v1 --min-facts 0.8 --max-cer 0.1
    travelbot eval --ocr        # the classical OCR reference row (transcription only)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    runner = parser.add_mutually_exclusive_group()
    runner.add_argument("--model", help="the in-process engine on this model folder")
    runner.add_argument("--openai", metavar="URL", help="an OpenAI-compatible endpoint, e.g. "
                        "http://vllm-0:8000/v1 (vLLM, SGLang, `travelbot serve`)")  # fmt: skip
    runner.add_argument("--ocr", action="store_true", help="the classical OCR baseline "
                        "(PP-OCRv4, CPU): transcription only")  # fmt: skip
    runner.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"),
                        help="print B's scores against A's, with what is within noise")  # fmt: skip
    parser.add_argument("--fp8-experts", action="store_true", help="the engine's experts in FP8")
    parser.add_argument("--fp8-kv-cache", action="store_true",
                        help="the engine's sliding keys and values in FP8")  # fmt: skip
    parser.add_argument("--openai-model", help="the served model name (TRAVELBOT_OPENAI_MODEL)")
    parser.add_argument("--seed", type=int, default=0, help="the photo set's seed (default 0)")
    parser.add_argument("--languages", help="only these, comma-separated: de,ja,zh-Hant")
    parser.add_argument("--kinds", help="only these: sign,board,menu,hours,warning,tickets")
    parser.add_argument("--conditions", help="only these: clean,blur,covered ...")
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=1,
                        help="photos answered at once (latency grows with it)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="write scores and answers here as JSON")
    parser.add_argument("--save-photos", type=Path, metavar="DIR",
                        help="write the set's photos and truth.json there, to look at")  # fmt: skip
    for name, help_text in (
        ("--max-cer", "transcription CER above this fails"),
        ("--min-language", "share of answers in the asked language below this fails"),
        ("--min-facts", "share of key facts found below this fails"),
        ("--min-honesty", "share of covered lines called unreadable below this fails"),
    ):
        parser.add_argument(name, type=float, metavar="X", help=f"{help_text} (exit 1)")


def main(args: argparse.Namespace) -> int:
    from evaluation.report import compare, failed_thresholds, summarize, table

    if (args.fp8_experts or args.fp8_kv_cache) and not args.model:
        print("--fp8-* is for the in-process engine (--model DIR)", file=sys.stderr)
        return 2
    if args.compare:
        a, b = (json.loads(path.read_text()) for path in args.compare)
        print(compare(a, b))
        return 0
    photos = _photos(args)
    if args.save_photos:
        from evaluation.photoset import save_set

        save_set(photos, args.save_photos)
    if not photos:
        print("no photo matches --languages/--kinds/--conditions", file=sys.stderr)
        return 2
    print(f"{len(photos)} photos (seed {args.seed})", file=sys.stderr)
    progress = lambda s: print(f"  {s.id:<18} CER {s.cer:.2f}", file=sys.stderr)  # noqa: E731
    if args.ocr:
        from evaluation.runners import read_with_ocr

        runner = "ocr:PP-OCRv4 (rapidocr-onnxruntime)"
        try:
            scores, answers = read_with_ocr(photos, on_score=progress)
        except ImportError as exc:  # its wheel is for Python < 3.13 (pyproject.toml)
            print(f"the OCR baseline needs rapidocr-onnxruntime: {exc}", file=sys.stderr)
            return 2
    elif args.model or args.openai:
        from inference import ModelNotFound

        try:
            runner, worker = _worker(args, len(photos))
        except ModelNotFound as exc:
            print(exc, file=sys.stderr)
            return 2
        scores, answers = asyncio.run(_answer(worker, photos, args, progress))
    else:
        print("say what answers: --model DIR, --openai URL or --ocr", file=sys.stderr)
        return 2
    summary, by_condition = summarize(scores), summarize(scores, by="condition")
    print(f"runner: {runner}")
    print(table(summary))
    print()
    print(table(by_condition, by="condition"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "runner": runner,
            "seed": args.seed,
            "num_photos": len(photos),
            "summary": summary,
            "by_condition": by_condition,
            "photos": [
                {**photo.truth(), **vars(s), "cer": s.cer, **answer}
                for photo, s, answer in zip(photos, scores, answers, strict=True)
            ],
        }
        args.out.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    thresholds = {
        name: value
        for name in ("max_cer", "min_language", "min_facts", "min_honesty")
        if (value := getattr(args, name)) is not None
    }
    failed = failed_thresholds(summary["overall"], thresholds)
    for line in failed:
        print(f"FAILED {line}", file=sys.stderr)
    return 1 if failed else 0


def _photos(args: argparse.Namespace):
    from bot.fonts import FontSet
    from bot.settings import load_settings
    from evaluation.photoset import build_set

    split = lambda value: tuple(value.split(",")) if value else None  # noqa: E731
    fonts = FontSet.find(load_settings().fonts_dir)
    return build_set(
        fonts,
        seed=args.seed,
        languages=split(args.languages),
        kinds=split(args.kinds),
        conditions=split(args.conditions),
    )


def _worker(args: argparse.Namespace, num_photos: int):
    """The worker the options name, as the bot would build it from its settings."""
    from bot.__main__ import create_worker
    from bot.logging import configure_logging
    from bot.settings import load_settings

    update: dict = {"max_queue": num_photos + 1}
    if args.openai:
        update |= {"engine": "openai", "openai_base_urls": [args.openai]}
        if args.openai_model:
            update["openai_model"] = args.openai_model
    else:
        update |= {"model_path": args.model, "fp8_experts": args.fp8_experts,
                   "fp8_kv_cache": args.fp8_kv_cache}  # fmt: skip
    settings = load_settings()
    if not args.openai and settings.engine == "openai":  # --model: the in-process engine
        update["engine"] = "batch"
    settings = settings.model_copy(update=update)
    # on stderr, apart from the table: the model load (minutes at full size) shows progress
    configure_logging(log_format=settings.log_format, level=settings.log_level)
    if args.openai:
        runner = f"openai:{args.openai} model={settings.openai_model}"
    else:
        fp8 = f"fp8_experts={settings.fp8_experts} fp8_kv_cache={settings.fp8_kv_cache}"
        runner = f"engine:{Path(args.model).name} engine={settings.engine} {fp8}"
    return runner, create_worker(settings)


async def _answer(worker, photos, args: argparse.Namespace, progress):
    from evaluation.runners import answer_all

    await worker.start()
    try:
        return await answer_all(
            worker,
            photos,
            max_new_tokens=args.max_new_tokens,
            concurrency=args.concurrency,
            on_score=progress,
        )
    finally:
        await worker.stop()
