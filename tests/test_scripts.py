"""The measuring scripts left in scripts/ (the bot's photo check and text detector; the
engine's GPU tools are tools/, tested in tests/tools/) still import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def test_every_script_imports() -> None:
    """One interpreter for all."""
    scripts = sorted(p.stem for p in SCRIPTS.glob("*.py"))
    done = subprocess.run(
        [sys.executable, "-c", "import importlib, sys\n"
         "for name in sys.argv[1:]:\n    importlib.import_module(name)\n", *scripts],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{SCRIPTS}"},
    )  # fmt: skip
    assert {"calibrate_photo_check", "lock", "measure_text_detector"} <= set(scripts)
    assert done.returncode == 0, done.stderr[-3000:]
