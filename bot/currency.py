"""Prices in the traveller's own currency: converted by this code, never by the model.

The model only reads prices out of the photo (the answer block's "prices"); they are
converted with a rate the traveller set (`/currency JPY 0.0062`), else with the European
Central Bank's daily reference rates (units per euro; a cross rate through the euro). The
ECB's file is fetched with a timeout at most once a `reference_rates_max_age_h`, kept in
SQLite, and the last rates kept are used while it cannot be fetched. With no rate at all
the answer says so and how to set one; it never guesses.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import structlog
from babel.numbers import format_currency, list_currencies

from bot.phrases import escape_markdown
from bot.storage import CurrencyChoice, ReferenceRates, Storage
from inference import Price

log = structlog.get_logger()

MAX_FEED_BYTES = 256 * 1024  # the ECB's daily file is under 2 KB
RETRY_AFTER_FAILURE_S = 600.0  # a feed that failed is not asked again for every answer
KNOWN_CURRENCIES = frozenset(list_currencies())
_DATE = re.compile(r"""<Cube\s+time=["']([0-9]{4}-[0-9]{2}-[0-9]{2})["']""")
_RATE = re.compile(r"""<Cube\s+currency=["']([A-Z]{3})["']\s+rate=["']([0-9]+(?:\.[0-9]+)?)["']""")


def read_ecb_feed(text: str) -> tuple[dict[str, float], str]:
    """Units per euro and the date, from the ECB's eurofxref-daily.xml; ValueError when it is
    not that file. Read by pattern, not by an XML parser: nothing in it can expand."""
    date = _DATE.search(text)
    rates = {code: float(rate) for code, rate in _RATE.findall(text) if float(rate) > 0}
    if date is None or not rates:
        raise ValueError("not the ECB's reference rates")
    return {**rates, "EUR": 1.0}, date[1]


class ExchangeRates:
    def __init__(self, storage: Storage, url: str, timeout_s: float, max_age_h: float) -> None:
        self._storage = storage
        self._url = url
        self._timeout_s = timeout_s
        self._max_age = timedelta(hours=max_age_h)
        self._lock = asyncio.Lock()
        self._failed_at = -RETRY_AFTER_FAILURE_S

    async def reference(self) -> ReferenceRates | None:
        """The newest reference rates that can be had: the kept ones while fresh, else
        fetched (one fetch at a time), else the kept ones however old; None if never any."""
        kept = await self._storage.get_reference_rates()
        if kept is not None and datetime.now(UTC) - kept.fetched_at < self._max_age:
            return kept
        async with self._lock:
            kept = await self._storage.get_reference_rates()
            if kept is not None and datetime.now(UTC) - kept.fetched_at < self._max_age:
                return kept
            if time.monotonic() - self._failed_at < RETRY_AFTER_FAILURE_S:
                return kept
            try:
                # the whole fetch, not each read: a feed sending a byte at a time would
                # hold every answer with a price (and this lock) for as long as it likes
                async with asyncio.timeout(self._timeout_s):
                    per_euro, date = await self._fetch()
            except (httpx.HTTPError, ValueError, TimeoutError) as exc:
                self._failed_at = time.monotonic()
                log.warning("reference_rates_unavailable", error=type(exc).__name__)
                return kept
            await self._storage.set_reference_rates(per_euro, date)
            log.info("reference_rates_fetched", date=date, num_rates=len(per_euro))
            return await self._storage.get_reference_rates()

    async def _fetch(self) -> tuple[dict[str, float], str]:
        async with (
            httpx.AsyncClient(timeout=self._timeout_s) as client,
            client.stream("GET", self._url) as response,
        ):
            response.raise_for_status()
            body = b""
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_FEED_BYTES:
                    raise ValueError("the rates file is too large")
        return read_ecb_feed(body.decode("utf-8", errors="replace"))


@dataclass(frozen=True)
class Conversion:
    price: Price
    value: float | None  # in the home currency; None: no rate known
    source: str | None  # "own" (the user's rate) or "ecb"


def convert(
    price: Price, home: str, own_rates: dict[str, float], reference: ReferenceRates | None
) -> Conversion:
    if price.currency in own_rates:
        return Conversion(price, price.amount * own_rates[price.currency], "own")
    per_euro = reference.per_euro if reference else {}
    if price.currency in per_euro and home in per_euro:
        return Conversion(price, price.amount / per_euro[price.currency] * per_euro[home], "ecb")
    return Conversion(price, None, None)


def prices_markdown(
    prices: tuple[Price, ...],
    choice: CurrencyChoice,
    reference: ReferenceRates | None,
    t,
    locale: str,
) -> str:
    """The prices of another currency, each with its value at home, a note for each currency
    without a rate, and where the rates come from. "" when there is nothing to convert."""
    home = choice.code
    foreign = [p for p in prices if home and p.currency != home]
    if not home or not foreign:
        return ""
    conversions = [convert(p, home, choice.own_rates, reference) for p in foreign]
    lines = [f"💱 **{escape_markdown(t('prices_heading', code=home))}**"]
    for c in conversions:
        label = f"{escape_markdown(c.price.item)}: " if c.price.item else ""
        written = escape_markdown(_money(c.price.amount, c.price.currency, locale))
        value = "?" if c.value is None else escape_markdown(_money(c.value, home, locale))
        lines.append(f"- {label}{written} ≈ {value}")
    notes = []
    for code in sorted({c.price.currency for c in conversions if c.value is None}):
        notes.append(t("price_no_rate", code=code))
    sources = {c.source for c in conversions}
    if "ecb" in sources and reference is not None:
        notes.append(t("prices_source_ecb", date=reference.date))
    if "own" in sources:
        notes.append(t("prices_source_own"))
    text = "\n".join(lines)
    if notes:
        text += "\n\n" + "\n".join(f"_{escape_markdown(note)}_" for note in notes)
    return text


def _money(amount: float, code: str, locale: str) -> str:
    try:
        return format_currency(amount, code, locale=locale)
    except (ValueError, LookupError):
        return f"{amount:,.2f} {code}"
