"""`travelbot eval` run for real: the OCR baseline reads the photos with its real model (so
a broken scorer fails here), the tiny checkpoint answers through the engine (noise: the run
is what is tested)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from evaluation.score import line_errors
from tests.conftest import OpenAIServer
from tests.test_cli import TRAVELBOT, run

# measured with this command on the full set: docs/eval-ocr-baseline.md
OCR_MAX_CER = 0.08  # clean and perspective Latin and Chinese signs; it measured 0.00-0.04


def test_the_ocr_baseline_reads_latin_and_chinese_signs(tmp_path: Path) -> None:
    out = tmp_path / "ocr.json"
    result = run("eval", "--ocr", "--languages", "de,zh-Hans", "--kinds", "sign,board,warning",
                 "--out", str(out), "--max-cer", str(OCR_MAX_CER))  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    rows = report["summary"]
    assert set(rows) == {"latin", "han-simplified", "overall"}
    assert rows["overall"]["num_photos"] == 6 and rows["overall"]["cer"] <= OCR_MAX_CER
    assert rows["overall"]["facts"] is None and "latin" in result.stdout
    assert set(report["by_condition"]) <= {"clean", "perspective", "blur", "glare", "low_light",
                                           "small_text", "angle", "covered", "overall"}  # fmt: skip
    assert "condition" in result.stdout
    # what OCR read of one photo is no reading of another's lines
    photos = report["photos"]
    for photo, other in zip(photos, photos[1:] + photos[:1], strict=True):
        errors = sum(line_errors(line, other["answer"]) for line in photo["lines"])
        assert errors / photo["num_chars"] > 0.5, (photo["id"], other["id"])
    failed = run("eval", "--ocr", "--languages", "he", "--kinds", "sign", "--max-cer", "0.5")
    assert failed.returncode == 1 and "FAILED cer" in failed.stderr  # it reads no Hebrew


def test_the_tiny_checkpoint_answers_the_set_through_the_engine(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tiny.json"
    result = run("eval", "--model", str(tiny_model_dir), "--languages", "de,ja",
                 "--kinds", "menu,sign", "--max-new-tokens", "16", "--out", str(out),
                 "--min-facts", "0.9")  # fmt: skip
    assert result.returncode == 1 and "FAILED facts" in result.stderr  # noise finds no facts
    report = json.loads(out.read_text())
    assert report["runner"].startswith("engine:") and "fp8_experts=False" in report["runner"]
    assert [p["id"] for p in report["photos"]] == ["de-sign", "de-menu", "ja-sign", "ja-menu"]
    for photo in report["photos"]:
        assert photo["answer"] and photo["finish_reason"] == "length"
        assert 0.5 <= photo["cer"] <= 1 and photo["latency_s"] > 0
        assert photo["language_ok"] in (True, False)
    overall = report["summary"]["overall"]
    assert overall["num_answers"] == 4 and overall["facts"] < 0.9
    fp8_out = tmp_path / "tiny-fp8.json"
    fp8 = run("eval", "--model", str(tiny_model_dir), "--fp8-experts", "--languages", "de",
              "--kinds", "sign", "--max-new-tokens", "16", "--out", str(fp8_out))  # fmt: skip
    assert fp8.returncode == 0, fp8.stderr
    assert "fp8_experts=True" in json.loads(fp8_out.read_text())["runner"]
    compared = run("eval", "--compare", str(out), str(fp8_out))
    assert compared.returncode == 0, compared.stderr
    assert "4 photos" in compared.stdout and "1 photos" in compared.stdout
    assert "latin" in compared.stdout and "cer " in compared.stdout
    missing = run("eval", "--model", str(tmp_path / "nothing"), "--languages", "de")
    assert missing.returncode == 2 and "No model folder" in missing.stderr


async def test_an_openai_endpoint_answers_the_set(
    openai_server: OpenAIServer, tmp_path: Path
) -> None:
    """`travelbot serve` on the tiny model, asked by `travelbot eval --openai` as vLLM would be."""
    out = tmp_path / "endpoint.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAVELBOT_")}
    process = await asyncio.create_subprocess_exec(
        TRAVELBOT, "eval", "--openai", openai_server.base_url, "--openai-model", "tiny-gemma4",
        "--languages", "ko", "--kinds", "hours,tickets", "--max-new-tokens", "8",
        "--concurrency", "2", "--out", str(out),
        env=env | {"TRAVELBOT_OPENAI_API_KEY": "test-key"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode()
    report = json.loads(out.read_text())
    assert report["runner"] == f"openai:{openai_server.base_url} model=tiny-gemma4"
    assert [p["id"] for p in report["photos"]] == ["ko-hours", "ko-tickets"]
    assert all(p["answer"] and p["latency_s"] > 0 for p in report["photos"])
    assert "korean" in stdout.decode()
