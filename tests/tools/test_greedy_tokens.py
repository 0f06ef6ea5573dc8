"""`python3 -m tools.greedy_tokens` on the tiny checkpoint (CPU): a run writes each way's
tokens, the comparison finds a file equal to itself and names the sequence that parts."""

from __future__ import annotations

import json
from pathlib import Path

from tools.greedy_tokens import main


def test_a_run_on_the_cpu_compares_equal_to_itself_and_a_changed_token_is_named(
    tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    runs = [tmp_path / "before.json", tmp_path / "before.json"]
    assert main(["--model", str(tiny_model_dir), "--device", "cpu", "--requests", "2",
                 "--new-tokens", "3", "--image-soft-tokens", "70", str(runs[0])]) == 0  # fmt: skip
    tokens = json.loads(runs[0].read_text())
    assert set(tokens) == {"bf16", "fp8"}
    assert [len(answer) for answer in tokens["bf16"] + tokens["fp8"]] == [3] * 4
    capsys.readouterr()
    assert main(["--compare", *map(str, runs)]) == 0
    assert json.loads(capsys.readouterr().out) == {"bf16": [], "fp8": []}

    tokens["fp8"][1][2] += 1
    runs[1] = tmp_path / "after.json"
    runs[1].write_text(json.dumps(tokens))
    assert main(["--compare", *map(str, runs)]) == 1
    assert json.loads(capsys.readouterr().out) == {"bf16": [], "fp8": [[1, 2]]}
