"""Prices in the traveller's currency: the ECB file read, rates fetched from a local feed
server (real HTTP, real SQLite), kept for a day, the last ones used while the feed fails;
conversions done by the code, with the user's own rates first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.currency import ExchangeRates, convert, prices_markdown, read_ecb_feed
from bot.i18n import Texts
from bot.render import render_messages
from bot.settings import Settings
from bot.storage import CurrencyChoice, ReferenceRates, Storage
from inference import Price
from tests.conftest import ECB_DAILY, FeedServer


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    async with await Storage.open(tmp_path / "bot.sqlite3") as store:
        yield store


def test_the_ecb_file_is_read_and_anything_else_refused() -> None:
    per_euro, date = read_ecb_feed(ECB_DAILY.format(date="2026-12-04", jpy="160.5"))
    assert date == "2026-12-04"
    assert per_euro == {"USD": 1.05, "JPY": 160.5, "GBP": 0.84, "EUR": 1.0}
    for text in ("", "<html>Service unavailable</html>", ECB_DAILY.replace("time=", "x=")):
        with pytest.raises(ValueError):
            read_ecb_feed(text.format(date="2026-12-04", jpy="1"))


async def test_rates_are_fetched_once_and_kept_for_a_day(
    storage: Storage, feed: FeedServer
) -> None:
    rates = ExchangeRates(storage, feed.url, timeout_s=2, max_age_h=24)
    first, again = await asyncio.gather(rates.reference(), rates.reference())
    assert first.per_euro["JPY"] == 160.0 and first.date == "2026-12-04"
    assert again == first and len(feed.requests) == 1  # one fetch for both
    assert await rates.reference() == first and len(feed.requests) == 1


async def test_old_rates_are_fetched_again_and_kept_when_the_feed_fails(
    storage: Storage, feed: FeedServer
) -> None:
    await storage.set_reference_rates({"EUR": 1.0, "JPY": 150.0}, "2026-11-01")
    stale = ExchangeRates(storage, feed.url, timeout_s=2, max_age_h=1e-9)
    assert (await stale.reference()).date == "2026-12-04"  # fetched anew

    feed.status = 503
    failing = ExchangeRates(storage, feed.url, timeout_s=2, max_age_h=1e-9)
    kept = await failing.reference()
    assert kept.date == "2026-12-04" and kept.per_euro["JPY"] == 160.0
    count = len(feed.requests)
    await failing.reference()  # not asked again right after a failure
    assert len(feed.requests) == count


async def test_a_slow_or_broken_feed_gives_no_rates_in_its_timeout(
    storage: Storage, feed: FeedServer
) -> None:
    feed.delay_s = 3.0
    started = asyncio.get_running_loop().time()
    assert await ExchangeRates(storage, feed.url, timeout_s=0.3, max_age_h=24).reference() is None
    assert asyncio.get_running_loop().time() - started < 2.5
    feed.delay_s, feed.body = 0.0, "<html>maintenance</html>"
    assert await ExchangeRates(storage, feed.url, timeout_s=2, max_age_h=24).reference() is None
    feed.body = "x" * 300_000  # too large to be the rates
    assert await ExchangeRates(storage, feed.url, timeout_s=2, max_age_h=24).reference() is None


REFERENCE = ReferenceRates({"EUR": 1.0, "JPY": 160.0, "USD": 1.05}, "2026-12-04", None)


def test_conversion_uses_own_rates_first_then_the_cross_rate() -> None:
    ramen = Price("Ramen", 1600.0, "JPY")
    assert convert(ramen, "EUR", {}, REFERENCE).value == pytest.approx(10.0)
    assert convert(ramen, "USD", {}, REFERENCE).value == pytest.approx(10.5)
    own = convert(ramen, "EUR", {"JPY": 0.006}, REFERENCE)
    assert (own.value, own.source) == (pytest.approx(9.6), "own")
    unknown = convert(Price("Tea", 50.0, "THB"), "EUR", {}, REFERENCE)
    assert (unknown.value, unknown.source) == (None, None)
    assert convert(ramen, "EUR", {}, None).value is None


def test_the_prices_section_says_what_it_cannot_convert() -> None:
    texts = Texts.load(Settings(_env_file=None).locales_dir)

    def t(key: str, /, **values: object) -> str:
        return texts.get("en", key, **values)

    prices = (
        Price("Ramen", 1600.0, "JPY"),
        Price("Tea", 50.0, "THB"),
        Price("Water", 2.0, "EUR"),  # already in the home currency: not listed
    )
    markdown = prices_markdown(prices, CurrencyChoice("EUR", True, {}), REFERENCE, t, "en")
    [shown] = render_messages(markdown)
    assert "Ramen: ¥1,600 ≈ €10.00" in shown
    assert "Tea: THB50.00 ≈ ?" in shown and "Water" not in shown
    assert t("price_no_rate", code="THB") in shown
    assert t("prices_source_ecb", date="2026-12-04") in shown
    assert prices_markdown(prices, CurrencyChoice(None, True, {}), REFERENCE, t, "en") == ""
    assert prices_markdown(prices[2:], CurrencyChoice("EUR", True, {}), REFERENCE, t, "en") == ""
