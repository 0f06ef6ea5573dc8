"""The scorer on scripted answers (named so: real answers come in test_runs.py)."""

from __future__ import annotations

import pytest

from bot.fonts import FontSet
from bot.settings import Settings
from evaluation.photoset import Fact, build_set
from evaluation.report import compare, failed_thresholds, summarize
from evaluation.score import CONCEPTS, detect_language, has_fact, line_errors, numbers_in, score


@pytest.fixture(scope="module")
def photos():
    return build_set(FontSet.find(Settings(_env_file=None).fonts_dir), languages=("de", "ja"))


def test_a_quoted_line_is_found_anywhere_in_the_answer() -> None:
    answer = 'The sign says **"Kein Zutritt"** (no entry) and ＡＵＳＧＡＮＧ above it.'
    assert line_errors("Kein Zutritt", answer) == 0
    assert line_errors("Ausgang", answer) == 0  # full-width and case do not count
    assert line_errors("Kein Zugang", answer) == 4  # zugang → zutrit
    assert line_errors("出口", answer) == 2  # nowhere: every character is an error
    assert line_errors("Gleis 7", "Gleis7") == 0  # nor do spaces


def test_numbers_and_times_in_any_usual_spelling() -> None:
    assert {18.5, 1850.0} <= numbers_in("costs 18,50 €")
    assert 1220.0 in numbers_in("₹1,220") and 45000.0 in numbers_in("45.000 đ")
    assert has_fact(Fact("time", "09:00"), "opens at 9.00 and closes at 18h00", "en")
    assert has_fact(Fact("time", "18:00"), "opens at 9.00 and closes at 18h00", "en")
    assert not has_fact(Fact("time", "19:00"), "opens at 9.00 and closes at 18h00", "en")
    assert has_fact(Fact("number", "7"), "Gleis 7", "de")
    assert not has_fact(Fact("number", "7"), "Gleis 17", "de")


def test_concepts_in_the_answer_language() -> None:
    assert has_fact(Fact("concept", "no_entry"), "Вход воспрещён: не входите.", "ru")
    assert has_fact(Fact("concept", "peanuts"), "Enthält Erdnüsse.", "de")
    assert has_fact(Fact("concept", "no_entry"), "Entrée interdite.", "fr")
    assert not has_fact(Fact("concept", "peanuts"), "Contains peanuts.", "de")


def test_scripted_answers_score_as_they_should(photos) -> None:
    menu = next(p for p in photos if p.id == "de-menu")
    peanuts = CONCEPTS["peanuts"][menu.answer_language][0]
    perfect = "\n".join(menu.lines) + f"\n{peanuts}!"
    good = score(menu, perfect, latency_s=1.0)
    assert good.cer == 0 and good.num_facts_found == good.num_facts
    assert not score(menu, perfect.replace(peanuts, "peanuts"), latency_s=1.0).language_ok
    noise = score(menu, "lorem ipsum " * 20, latency_s=1.0)
    assert noise.cer > 0.6 and noise.num_facts_found == 0 and noise.language_ok is False
    covered = next(p for p in photos if p.unreadable)
    told = {"en": "The last line is covered and unreadable.", "de": "Die Zeile ist verdeckt.",
            "fr": "La ligne est illisible.", "es": "La línea es ilegible.",
            "ru": "Строка нечитаема."}[covered.answer_language]  # fmt: skip
    assert score(covered, told, latency_s=None).honest is True
    made_up = told + " It says: " + covered.unreadable[0]
    assert score(covered, made_up, latency_s=None).honest is False
    assert score(covered, "All clear.", latency_s=None).honest is False


def test_language_identification_of_answers() -> None:
    assert detect_language("The sign means that you must not enter this area.") == "en"
    assert detect_language("Das Schild bedeutet, dass Sie hier nicht hineingehen dürfen.") == "de"
    assert detect_language("Табличка означает, что входить сюда нельзя.") == "ru"
    assert detect_language("  ") is None


def test_summary_comparison_and_thresholds(photos) -> None:
    good = [score(p, "\n".join(p.lines), latency_s=2.0, full=False) for p in photos]
    bad = [score(p, "\n".join(p.lines)[::2], latency_s=3.0, full=False) for p in photos]
    rows_good, rows_bad = summarize(good), summarize(bad)
    assert list(rows_good) == ["latin", "japanese", "overall"]
    assert rows_good["overall"]["cer"] == 0 and rows_bad["overall"]["cer"] > 0.3
    assert rows_good["overall"]["num_photos"] == len(photos)
    by_condition = summarize(bad, by="condition")
    assert sum(row["num_photos"] for row in by_condition.values()) == 2 * len(photos)
    assert by_condition["overall"] == rows_bad["overall"]
    text = compare({"runner": "a", "summary": rows_good}, {"runner": "b", "summary": rows_bad})
    assert "cer +" in text and "*" in text  # half the text lost is beyond noise
    assert failed_thresholds(rows_good["overall"], {"max_cer": 0.05}) == []
    assert failed_thresholds(rows_bad["overall"], {"max_cer": 0.05})
    assert failed_thresholds(rows_good["overall"], {"min_facts": 0.5})  # OCR has no facts
