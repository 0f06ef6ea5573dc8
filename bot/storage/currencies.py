"""/currency: the user's home currency and own rates, and the ECB's reference rates (one
set for everyone, the last published)."""

from __future__ import annotations

from datetime import datetime

from bot.storage.records import CurrencyChoice, ReferenceRates, utc_now
from bot.storage.users import UserStore


class CurrencyStore(UserStore):
    async def get_currency(self, user_id: int) -> CurrencyChoice:
        row = await self._one(
            "SELECT currency, currency_asked FROM users WHERE user_id = ?", (user_id,)
        )
        rates = await self._all(
            "SELECT currency, rate FROM user_rates WHERE user_id = ? ORDER BY currency", (user_id,)
        )
        code, asked = row if row else (None, 0)
        return CurrencyChoice(code, bool(asked), {c: float(r) for c, r in rates})

    async def set_currency(self, user_id: int, code: str, *, default_language: str) -> None:
        """Set the home currency (creating the user if missing); the rates the user set were
        to the old one, so they go."""
        await self._set_currency_columns(user_id, code, default_language)
        async with self._transaction():
            await self._db.execute("DELETE FROM user_rates WHERE user_id = ?", (user_id,))

    async def set_currency_asked(self, user_id: int, *, default_language: str) -> None:
        await self._set_currency_columns(user_id, None, default_language)

    async def _set_currency_columns(
        self, user_id: int, code: str | None, default_language: str
    ) -> None:
        now = utc_now()
        async with self._transaction():
            await self._add_user_if_missing(user_id, default_language, now)
            await self._db.execute(
                "UPDATE users SET currency = COALESCE(?, currency), currency_asked = 1,"
                " updated_at = ? WHERE user_id = ?",
                (code, now, user_id),
            )

    async def set_own_rate(self, user_id: int, currency: str, rate: float) -> None:
        async with self._transaction():
            await self._db.execute(
                "INSERT OR REPLACE INTO user_rates VALUES (?, ?, ?, ?)",
                (user_id, currency, rate, utc_now()),
            )

    async def get_reference_rates(self) -> ReferenceRates | None:
        rows = await self._all(
            "SELECT currency, per_euro, rates_date, fetched_at FROM reference_rates"
        )
        if not rows:
            return None
        return ReferenceRates(
            {code: float(rate) for code, rate, _, _ in rows},
            rows[0][2],
            datetime.fromisoformat(rows[0][3]),
        )

    async def set_reference_rates(self, per_euro: dict[str, float], date: str) -> None:
        """Replace the kept rates by a newer publication."""
        now = utc_now()
        async with self._transaction():
            await self._db.execute("DELETE FROM reference_rates")
            await self._db.executemany(
                "INSERT INTO reference_rates VALUES (?, ?, ?, ?)",
                [(code, rate, date, now) for code, rate in per_euro.items()],
            )
