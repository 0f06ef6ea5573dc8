"""The typed context every handler gets: shared services and the current user's profile."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from telegram.ext import Application, CallbackContext, ExtBot

from bot.active_jobs import ActiveJobs
from bot.album_collector import AlbumCollector
from bot.currency import ExchangeRates
from bot.fonts import FontSet
from bot.i18n import Texts
from bot.logging import user_ref
from bot.metrics import Metrics
from bot.settings import Settings
from bot.stats import Stats
from bot.storage import Storage, User
from bot.text_lines import SharedDetector
from bot.update_budget import UpdateBudget
from bot.user_locks import UserLocks
from inference import InferenceService


@dataclass
class Services:
    settings: Settings
    storage: Storage
    worker: InferenceService  # the local Worker or RemoteWorker
    texts: Texts
    user_locks: UserLocks
    active_jobs: ActiveJobs = field(default_factory=ActiveJobs)
    stats: Stats = field(default_factory=Stats)
    metrics: Metrics = field(init=False)  # Prometheus, served by bot/health.py
    rates: ExchangeRates = field(init=False)
    font_set: FontSet | None = None  # found on first use where not given
    drawing_cards: set[int] = field(default_factory=set)  # users whose phrase card is drawn
    drawing_overlays: set[int] = field(default_factory=set)  # users whose overlay is drawn
    text_lines: SharedDetector = field(default_factory=SharedDetector)  # bot/text_lines.py
    albums: AlbumCollector = field(init=False)  # albums whose parts are arriving
    update_budget: UpdateBudget = field(default_factory=UpdateBudget)  # flood control per user

    def __post_init__(self) -> None:
        self.metrics = Metrics(self.worker)
        self.albums = AlbumCollector(
            quiet_s=self.settings.album_quiet_s, max_wait_s=self.settings.album_max_wait_s
        )
        settings = self.settings
        self.rates = ExchangeRates(
            self.storage,
            settings.reference_rates_url,
            settings.reference_rates_timeout_s,
            settings.reference_rates_max_age_h,
        )

    @property
    def fonts(self) -> FontSet:
        """The fonts of phrase pictures (`travelbot run` finds them at start, so that a
        missing one stops it there: bot/fonts.py)."""
        if self.font_set is None:
            self.font_set = FontSet.find(self.settings.fonts_dir)
        return self.font_set

    def record_answer(
        self, *, latency_s: float, first_token_s: float | None, num_output_tokens: int
    ) -> None:
        """One delivered answer, for /stats and for /metrics."""
        self.stats.record_answer(latency_s=latency_s, first_token_s=first_token_s)
        self.metrics.record_answer(
            latency_s=latency_s, first_token_s=first_token_s, num_output_tokens=num_output_tokens
        )

    async def erase_user(self, user_id: int) -> int:
        """/forget: stop the user's answers being produced, delete everything stored about
        them (every chat, the database files' old copies too) and their photos in the
        engine's caches; return the rows deleted. True from the moment it returns."""
        stopping = self.active_jobs.cancel(user_id)
        self.albums.forget(user_id)
        count = await self.storage.delete_user_data(user_id)
        if stopping:  # their requests have left the engine before its caches are cleared
            await asyncio.wait(stopping)
        await self.worker.forget(user_ref(user_id))
        return count

    def record_failure(self, kind: str) -> None:
        self.stats.record_failure()
        self.metrics.record_failure(kind)


SERVICES_KEY = "services"


class BotContext(CallbackContext[ExtBot, dict, dict, dict]):
    """Shared services behind typed properties; `speaker_id` and `profile` are set for each
    update (group -1)."""

    def __init__(self, application: Application, chat_id=None, user_id=None) -> None:
        super().__init__(application, chat_id=chat_id, user_id=user_id)
        self.profile: User | None = None
        self.speaker_id: int = 0  # whom the update's data belongs to (handlers.updates)

    @property
    def services(self) -> Services:
        return self.bot_data[SERVICES_KEY]

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def storage(self) -> Storage:
        return self.services.storage

    @property
    def worker(self) -> InferenceService:
        return self.services.worker

    @property
    def language(self) -> str:
        """The user's answer language code ("de", "nl", "zh-Hant"): any inference.languages
        code, not only a UI locale."""
        return self.profile.language if self.profile else self.settings.default_language

    def t(self, key: str, /, **values: object) -> str:
        """A UI string in the UI locale nearest the user's language (Texts.ui_language)."""
        return self.services.texts.get(self.language, key, **values)
