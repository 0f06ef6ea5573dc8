"""Run a script of Triton kernels under Triton's CPU interpreter: a subprocess, because
the interpreter is chosen when Triton loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_interpreted(script: str, *args: str) -> dict:
    """The JSON object the script prints last (it must exit 0)."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_small(errors: dict, count: int, bound: float = 0.01) -> None:
    """`count` cases, each relative error below `bound`."""
    assert len(errors) == count, sorted(errors)
    for case, error in errors.items():
        assert error < bound, f"{case}: error {error:.5f}"
