"""`travelbot check-fp8` on the tiny checkpoint (CPU): the comparison's machinery, against
the same engine (nothing may differ) and against FP8 experts (something must)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from inference import EngineConfig, GemmaEngine
from inference.runtime.config import RuntimeConfig
from inference.runtime.gemma4.fp8_experts import is_quantized
from inference.runtime.model_runner import ModelRunner
from tools.bench import make_requests
from tools.fp8_check import answers_and_logprobs, compare, summary

TRAVELBOT = Path(sys.executable).with_name("travelbot")
RUNTIME = RuntimeConfig(max_slots=2, max_seq_len=2048)


def test_teacher_forcing_through_the_engine_gives_its_own_greedy_tokens(
    tiny_engine: GemmaEngine,
) -> None:
    answers, logprobs = answers_and_logprobs(tiny_engine, RUNTIME, make_requests(2, 6), None)
    assert [row.argmax(-1).tolist() for row in logprobs] == answers
    assert all(len(answer) == 6 for answer in answers)


def test_teacher_forcing_keeps_each_steps_logits_when_decode_reuses_its_output(
    tiny_engine: GemmaEngine, monkeypatch
) -> None:
    """Decode steps replayed from CUDA graphs (GPUs) return views of one buffer that the
    next step writes over (ModelRunner._graph_logits); the CPU's eager steps do not, so
    here decode hands out such views too."""
    real, buffer = ModelRunner.decode, torch.empty(0)

    def graph_like(self, positions, token_ids=None):
        nonlocal buffer
        logits = real(self, positions, token_ids)
        if buffer.shape != logits.shape:
            buffer = torch.empty_like(logits)
        return buffer.copy_(logits)

    monkeypatch.setattr(ModelRunner, "decode", graph_like)
    answers, logprobs = answers_and_logprobs(tiny_engine, RUNTIME, make_requests(2, 6), None)
    assert [row.argmax(-1).tolist() for row in logprobs] == answers


def test_bf16_against_itself_is_identical(tiny_engine: GemmaEngine) -> None:
    rows = compare(tiny_engine, make_requests(2, 6), RUNTIME, RUNTIME)
    assert summary(rows) == {"identical_answers": 2, "photos": 2, "top_token_agreement": 1.0,
                             "kl_mean": 0.0, "kl_max": 0.0}  # fmt: skip
    assert all(row.bf16_text == row.fp8_text and row.tokens == 6 for row in rows)


def test_fp8_experts_move_the_distributions_a_little(tiny_model_dir: Path) -> None:
    # its own copy of the model: FP8 experts are quantized in place
    base = GemmaEngine.load(EngineConfig(model_path=tiny_model_dir, device="cpu"))
    rows = compare(base, make_requests(2, 6), RUNTIME, RuntimeConfig(
        max_slots=2, max_seq_len=2048, fp8_experts=True))  # fmt: skip
    assert is_quantized(base.model.model.language_model.layers[0].experts)  # in place
    total = summary(rows)
    assert 0 < total["kl_mean"] <= total["kl_max"] < 1  # nats
    assert 0 < total["top_token_agreement"] <= 1


def test_the_command_writes_json_and_its_exit_code_follows_the_bounds(tmp_path: Path) -> None:
    out = tmp_path / "fp8.json"
    common = [str(TRAVELBOT), "check-fp8", "--tiny", "--photos", "2", "--new-tokens", "4",
              "--out", str(out)]  # fmt: skip
    loose = subprocess.run([*common, "--kv-cache", "--max-mean-kl", "1", "--min-agreement",
                            "0"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert loose.returncode == 0, loose.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["passed"] and data["photos"] == 2 and len(data["photos_compared"]) == 2
    assert data["fp8_kv_cache"] and 0 < data["kl_mean"] < 1
    assert "KL mean" in loose.stdout and "PASS" in loose.stdout
    strict = subprocess.run([*common, "--max-mean-kl", "0"], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert strict.returncode == 1 and "FAIL" in strict.stdout
    assert json.loads(out.read_text())["passed"] is False
