"""Scores summed up per script and overall; the table, the JSON, the comparison of two runs
and the thresholds a deployment gates on."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

from evaluation.content import SCRIPTS
from evaluation.score import Score
from evaluation.spoil import CONDITIONS

METRICS = ("cer", "language", "facts", "honesty", "latency_s")
HIGHER_IS_BETTER = {"cer": False, "language": True, "facts": True, "honesty": True,
                    "latency_s": False}  # fmt: skip


def summarize(scores: Iterable[Score], *, by: str = "script") -> dict[str, dict]:
    """Per script (or per condition: `by`), in the set's order, then "overall": each metric
    (None where nothing was scored) and the counts it is over."""
    scores = list(scores)
    keys = SCRIPTS if by == "script" else CONDITIONS
    groups = {key: [s for s in scores if getattr(s, by) == key] for key in keys}
    rows = {key: _row(group) for key, group in groups.items() if group}
    rows["overall"] = _row(scores)
    return rows


def _row(scores: list[Score]) -> dict:
    chars = sum(s.num_chars for s in scores)
    languages = [s.language_ok for s in scores if s.language_ok is not None]
    with_facts = [s for s in scores if s.num_facts_found is not None]
    facts = sum(s.num_facts for s in with_facts)
    honest = [s.honest for s in scores if s.honest is not None]
    latencies = sorted(s.latency_s for s in scores if s.latency_s is not None)
    return {
        "num_photos": len(scores),
        "num_chars": chars,
        "cer": sum(s.num_errors for s in scores) / chars if chars else None,
        "num_answers": len(languages),
        "language": sum(languages) / len(languages) if languages else None,
        "num_facts": facts if with_facts else 0,
        "facts": sum(s.num_facts_found or 0 for s in with_facts) / facts if facts else None,
        "num_covered": len(honest),
        "honesty": sum(honest) / len(honest) if honest else None,
        "latency_s": statistics.median(latencies) if latencies else None,
        "latency_p90_s": latencies[math.ceil(0.9 * len(latencies)) - 1] if latencies else None,
    }


def table(rows: dict[str, dict], *, by: str = "script") -> str:
    header = f"{by:<16} {'photos':>6} {'CER':>6} {'lang':>6} {'facts':>6} {'honest':>6} " \
             f"{'p50 s':>7} {'p90 s':>7}"  # fmt: skip
    lines = [header, "-" * len(header)]
    for script, row in rows.items():
        lines.append(
            f"{script:<16} {row['num_photos']:>6} {_pct(row['cer'])} {_pct(row['language'])} "
            f"{_pct(row['facts'])} {_pct(row['honesty'])} {_sec(row['latency_s'])} "
            f"{_sec(row['latency_p90_s'])}"
        )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return f"{'-':>6}" if value is None else f"{100 * value:>5.1f}%"


def _sec(value: float | None) -> str:
    return f"{'-':>7}" if value is None else f"{value:>7.2f}"


def noise(metric: str, row: dict, other: dict) -> float | None:
    """How far the metric may move between two runs by chance alone: twice the standard
    error of a proportion over the smaller count (photos, facts or characters; CER's
    characters come in lines, so photos count there)."""
    counts = {"cer": "num_photos", "language": "num_answers", "facts": "num_facts",
              "honesty": "num_covered"}  # fmt: skip
    if metric not in counts:
        return None
    n = min(row[counts[metric]], other[counts[metric]])
    p = (row[metric] + other[metric]) / 2
    if not n:
        return None
    return 2 * math.sqrt(max(p * (1 - p), 0.01) / n)


def compare(a: dict, b: dict) -> str:
    """B against A, per script: each difference, marked when it is beyond noise."""
    rows_a, rows_b = a["summary"], b["summary"]
    lines = [
        f"A: {a.get('runner')}, {a.get('num_photos')} photos, seed {a.get('seed')}",
        f"B: {b.get('runner')}, {b.get('num_photos')} photos, seed {b.get('seed')}",
        "B - A in points (* beyond noise, ~ within it: ±2 standard errors for the counts)",
    ]
    for script in rows_a:
        if script not in rows_b:
            continue
        parts = []
        for metric in METRICS:
            va, vb = rows_a[script][metric], rows_b[script][metric]
            if va is None or vb is None:
                continue
            diff = vb - va
            if metric == "latency_s":
                parts.append(f"p50 {diff:+.2f} s")
                continue
            margin = noise(metric, rows_a[script], rows_b[script])
            mark = "*" if margin is not None and abs(diff) > margin else "~"
            parts.append(f"{metric} {100 * diff:+.1f}{mark}(±{100 * (margin or 0):.0f})")
        lines.append(f"{script:<16} " + "  ".join(parts))
    return "\n".join(lines)


def failed_thresholds(overall: dict, thresholds: dict[str, float]) -> list[str]:
    """What misses its bound: "max_cer" is an upper bound, the others lower ones."""
    failed = []
    for name, bound in thresholds.items():
        metric = name.removeprefix("max_").removeprefix("min_")
        value = overall.get(metric)
        if value is None:
            failed.append(f"{metric}: not measured (bound {bound})")
        elif (value > bound) if name.startswith("max_") else (value < bound):
            failed.append(f"{metric} {value:.3f} beyond the bound {bound}")
    return failed
