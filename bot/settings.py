"""All settings of the bot, from TRAVELBOT_* environment variables or a .env file."""

from __future__ import annotations

import json
import os
import secrets
import string
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

ROOT = Path(__file__).resolve().parent.parent
_SECRET_CHARS = set(string.ascii_letters + string.digits + "_-")  # what Telegram allows


def _data_dir() -> Path:
    """Where the database goes unless TRAVELBOT_DATABASE_PATH says: never inside the package
    (site-packages may be read-only, and a reinstall would delete it). systemd's
    StateDirectory= (the first, if several), else $XDG_DATA_HOME/travelbot, else
    ~/.local/share/travelbot (a relative XDG_DATA_HOME is invalid by the XDG spec: ignored)."""
    if state := os.environ.get("STATE_DIRECTORY", "").split(":")[0]:
        return Path(state)
    xdg = os.environ.get("XDG_DATA_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share") / "travelbot"


def _locales_dir() -> Path:
    """The UI strings: bot/locales in an installed wheel (setup.py maps locales/ there),
    else locales/ of the checkout (an editable install, or code run from the source tree)."""
    packaged = Path(__file__).resolve().parent / "locales"
    return packaged if packaged.is_dir() else ROOT / "locales"


class StartupError(Exception):
    """Why the bot cannot start, in one line that says what to do: `travelbot run` logs it
    as `bot_failed` with `reason`, without a traceback."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _random_secret() -> SecretStr:
    return SecretStr(secrets.token_urlsafe(32))  # URL-safe base64: only those characters


# A list setting, read from its variable by _split_list below rather than by pydantic-settings,
# which takes only JSON (TRAVELBOT_ALLOWED_USER_IDS=111,222 would be an error). `description`
# says what it accepts, for load_settings' message.
IDS = "comma-separated Telegram user ids, e.g. 111,222 (or a JSON list)"
URLS = "comma-separated URLs, e.g. http://vllm-0:8000/v1,http://vllm-1:8000/v1 (or a JSON list)"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAVELBOT_", env_file=".env", extra="ignore")

    # Telegram
    telegram_token: SecretStr | None = None
    telegram_base_url: str = "https://api.telegram.org/bot"
    telegram_base_file_url: str = "https://api.telegram.org/file/bot"
    # empty: everyone may use the bot
    allowed_user_ids: Annotated[set[int], NoDecode] = Field(default_factory=set, description=IDS)
    admin_user_ids: Annotated[set[int], NoDecode] = Field(default_factory=set, description=IDS)
    max_concurrent_updates: int = 256
    # Flood control: Telegram's limits, and retries after "429 Too Many Requests"
    telegram_messages_per_second: float = 30  # all chats together; 0: no limit
    telegram_messages_per_minute_per_group: float = 20  # 0: no limit
    telegram_max_retries: int = 3

    # Webhook: Telegram posts updates to webhook_url instead of being polled. TLS ends at a
    # reverse proxy, which forwards the URL's path to webhook_listen:webhook_port.
    webhook_url: str | None = None  # e.g. https://bot.example.org/telegram; None: polling
    webhook_secret_token: SecretStr = Field(default_factory=_random_secret)
    webhook_listen: str = "127.0.0.1"  # 0.0.0.0 in a container, where the proxy is outside
    webhook_port: int = 8443

    # HTTP health and metrics: /healthz, /readyz, /metrics (Prometheus)
    http_listen: str = "127.0.0.1"
    http_port: int = 0  # 0: off

    # Model (in-process engine)
    # a folder, or a Hugging Face repo id (google/gemma-4-26B-A4B-it) found in the local
    # cache (HF_HUB_CACHE, HF_HOME); a folder of the same name wins; nothing is downloaded
    model_path: str | Path | None = None
    device: str = "auto"
    dtype: str = "auto"
    image_soft_tokens: int | None = None  # 70, 140, 280, 560 or 1120; None: checkpoint default
    experts_implementation: str | None = None
    max_new_tokens: int = 1024
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 64

    # Engine and worker
    engine: Literal["batch", "generate", "openai"] = "batch"  # batching, generate(), or HTTP
    max_batch_size: int = 64  # sequences decoding together (batch engine)
    max_seq_len: int = 4096  # prompt + answer tokens per sequence (batch engine)
    # GPU memory for keys and values (batch engine): fewer sequences than max_batch_size
    # when they would not fit; unset: max_batch_size of them (64 of 4,096: ~18 GiB in bf16)
    kv_cache_gib: float | None = Field(default=None, gt=0)
    cuda_graphs: bool | None = None  # None: on when the model runs on a GPU
    compile_layers: bool | None = None  # torch.compile the decoder layers; None: on a GPU
    prefix_cache_tokens: int = 4096  # the system prompt's KV kept on the device; 0: off
    # the vision tower's output for photos seen again (a follow-up's earlier photo), kept on
    # the device (batch engine; ~1.6 MB a photo at 280 soft tokens); 0: off
    photo_cache_mib: int = Field(default=512, ge=0)
    fp8_experts: bool = False  # expert weights in FP8 (batch engine; `travelbot check-fp8` first)
    fp8_kv_cache: bool = False  # sliding layers' keys/values in FP8 (the same)
    max_queue: int = 64  # requests waiting beyond the running batch
    request_timeout_s: float = 300  # a request still unanswered after this is cancelled
    delivery_retry_s: float = 1.0  # first wait before sending an answer again; doubles each time

    # OpenAI-compatible engine (engine="openai"): vLLM, SGLang or `travelbot serve`
    openai_base_urls: Annotated[list[str], NoDecode] = Field(default_factory=list, description=URLS)
    openai_model: str = "google/gemma-4-26B-A4B-it"  # the served model name
    openai_api_key: SecretStr | None = None
    openai_max_concurrency_per_endpoint: int = 32  # requests in flight per server
    openai_connect_timeout_s: float = 5.0
    openai_read_timeout_s: float = 120.0  # the longest wait for the next streamed chunk

    # `travelbot serve`: this engine as an OpenAI-compatible server
    serve_api_key: SecretStr | None = None  # None: no Authorization needed

    # Storage
    database_path: Path = Field(default_factory=lambda: _data_dir() / "travelbot.sqlite3")
    max_history_turns: int = 6  # earlier turns put into the prompt
    max_stored_messages: int = 200  # per user; older ones are deleted
    retention_days: float = 30  # history and finished jobs older than this are deleted

    # Limits on what users send
    max_requests_in_flight: int = 3  # per user: accepted but not yet answered
    max_question_chars: int = 1000
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    # An album is one request once no part came for album_quiet_s (its parts arrive within
    # a moment of each other; this much waits out a slow delivery, little beside the answer's
    # own time), album_max_wait_s after its first part at the latest, or with its 10th
    album_quiet_s: float = Field(default=1.5, gt=0)
    album_max_wait_s: float = Field(default=10.0, gt=0)

    # Chat behaviour
    default_language: str = "en"
    locales_dir: Path = Field(default_factory=_locales_dir)
    # Noto fonts for "Show to staff" pictures, searched recursively (bot/fonts.py names the
    # files; Debian's fonts-noto-core and fonts-noto-cjk put them here)
    fonts_dir: Path = Path("/usr/share/fonts")
    # Prices in the user's currency: the ECB's daily reference rates (bot/currency.py)
    reference_rates_url: str = "https://www.ecb.europa.eu/stats/eurofxref/eurofxref-daily.xml"
    reference_rates_timeout_s: float = Field(default=5.0, gt=0)
    reference_rates_max_age_h: float = Field(default=24.0, gt=0)  # then fetched again
    stream_interval_s: float = 1.0  # least time between two streamed updates of one answer

    # Logging
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # Key of the pseudonyms that stand for user ids in logs (HMAC-SHA256): the same key gives
    # the same pseudonyms on every replica; unset: a random key made on the first start and
    # kept beside the database, in log-pseudonym.key
    log_pseudonym_key: SecretStr | None = None

    @field_validator("allowed_user_ids", "admin_user_ids", "openai_base_urls", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        """A variable's text as a list: a JSON list as before, else its comma-separated items
        ("" and "[]": none). Lists and sets given in code pass through."""
        if not isinstance(value, str):
            return value
        if value.strip().startswith("["):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError("starts with [ but is no JSON list") from None
        return [item.strip() for item in value.split(",") if item.strip()]

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_pseudonym_key", mode="before")
    @classmethod
    def _long_key_or_none(cls, value: object) -> object:
        if value is None or value == "":  # e.g. a blank line in .env
            return None
        plain = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        if len(plain) < 16:  # a short key could be guessed together with the ids
            raise ValueError("at least 16 characters, e.g. from `openssl rand -hex 32`")
        return value

    @property
    def log_pseudonym_key_file(self) -> Path:
        """Where the random key is kept when log_pseudonym_key is unset."""
        return self.database_path.parent / "log-pseudonym.key"

    def secret_values(self) -> tuple[str, ...]:
        """The values of all secret settings that are set: no output may show them."""
        values = (getattr(self, name) for name in type(self).model_fields)
        return tuple(
            value.get_secret_value()
            for value in values
            if isinstance(value, SecretStr) and value.get_secret_value()
        )

    @field_validator("webhook_secret_token", mode="before")
    @classmethod
    def _secret_or_random(cls, value: object) -> object:
        """Telegram sends this secret in a header with every update; unset: a random one."""
        if value is None or value == "":
            return _random_secret()
        plain = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        if not _SECRET_CHARS.issuperset(plain) or len(plain) > 256:
            raise ValueError("1-256 characters, only A-Z, a-z, 0-9, _ and -")
        return value

    def require_token(self) -> str:
        if self.telegram_token is None or not self.telegram_token.get_secret_value():
            raise StartupError(
                "token_missing",
                "TRAVELBOT_TELEGRAM_TOKEN is not set: create a bot with @BotFather and "
                "put its token in the environment or in .env.",
            )
        return self.telegram_token.get_secret_value()


def load_settings() -> Settings:
    """Settings from the environment and .env. A wrong value ends the program (exit status 2)
    with one line per wrong variable: its name and what it accepts, never the value (it may
    be a secret, and pydantic's own message shows it: input_value=...)."""
    try:
        return Settings()
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        problems = [_problem(error["loc"], error["msg"]) for error in errors]
    except SettingsError as exc:  # names the field only; no field here should raise it
        problems = [f"Invalid settings: {exc}"]
    print(*problems, sep="\n", file=sys.stderr)
    raise SystemExit(2)


def _problem(loc: tuple, message: str) -> str:
    """One line: the variable of an error's location, what is wrong, and what it accepts
    where its field says (e.g. a list's item: TRAVELBOT_ALLOWED_USER_IDS, item 2)."""
    if not loc:
        return f"Invalid setting: {message}"
    name, *inner = loc
    field = Settings.model_fields.get(str(name))
    where = "".join(f", item {part + 1}" for part in inner if isinstance(part, int))
    accepts = f"; it takes {field.description}" if field and field.description else ""
    return f"Invalid setting TRAVELBOT_{str(name).upper()}{where}: {message}{accepts}"
