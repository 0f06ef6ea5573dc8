"""One aiosqlite connection shared by every table's methods: writes are serialised by one
lock, each in a transaction that a cancelled caller never leaves open."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiosqlite

from bot.storage import schema

T = TypeVar("T")


async def _to_the_end(awaitable: Awaitable[T]) -> T:
    """Await a statement that must finish even if the caller is cancelled: aiosqlite runs it
    in its own thread anyway, and a BEGIN or COMMIT left behind would leave the connection
    inside a transaction for every later caller. Cancellation is raised after it is done."""
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


class Database:
    """The connection, its write lock and transactions; the base of every table's methods."""

    def __init__(self, db: aiosqlite.Connection, max_stored_messages: int) -> None:
        self._db = db
        self._max_stored = max_stored_messages
        self._lock = asyncio.Lock()
        self._schema_version = 0
        self.write_error: str | None = None  # the last write's database error, until one works

    async def close(self) -> None:
        await self._db.close()

    @property
    def schema_version(self) -> int:
        return self._schema_version

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error), one writer at a time."""
        async with self._lock, self._transaction_locked():
            yield

    @asynccontextmanager
    async def _transaction_locked(self) -> AsyncIterator[None]:
        """A transaction under the held write lock. Safe to cancel at any await: the
        connection is never left inside a transaction."""
        try:
            await _to_the_end(self._db.execute("BEGIN IMMEDIATE"))
            yield
            await _to_the_end(self._db.execute("COMMIT"))
        except BaseException as exc:
            # a statement cancelled mid-way still runs in aiosqlite's thread: ROLLBACK is
            # queued after it there
            if self._db.in_transaction:
                await _to_the_end(self._db.execute("ROLLBACK"))
            if isinstance(exc, sqlite3.Error):
                self._write_failed(exc)
            raise
        self.write_error = None

    def _write_failed(self, exc: sqlite3.Error) -> None:
        self.write_error = f"{type(exc).__name__}: {exc}"

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first row of a query, or None."""
        async with self._db.execute(sql, params) as cur:
            return await cur.fetchone()

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return list(await self._db.execute_fetchall(sql, params))

    async def _migrate(self) -> None:
        migrations = schema.MIGRATIONS
        for version, statements in enumerate(migrations, start=1):
            async with self._transaction():
                (current,) = await self._one("PRAGMA user_version")  # re-read under the lock
                if current > len(migrations):
                    raise RuntimeError(f"database schema v{current} is newer than this code")
                if current >= version:
                    continue
                for sql in statements:
                    await self._db.execute(sql)
                await self._db.execute(f"PRAGMA user_version = {version}")
        (self._schema_version,) = await self._one("PRAGMA user_version")

    async def _erase_old_copies(self) -> None:
        """After a delete: copy the WAL into the database and empty it, so that the deleted
        rows' earlier page images in the WAL are gone too (secure_delete zeroes them in the
        database itself). Called under the write lock, right after the delete's COMMIT."""
        await _to_the_end(self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
