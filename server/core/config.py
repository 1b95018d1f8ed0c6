"""One typed settings object, read once from the environment (and ``.env``).

Nothing else in the project reads ``os.environ``: the settings are passed down. A bad
value stops start-up with one line naming the variable (see :func:`load_settings`).

Why one module of ~400 lines: one settings class is the one place every ``CERO_*``
variable is declared, typed, bounded and documented.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import time
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from server.core.device_clients import default_client_ids
from server.core.validation import first_error

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

#: ``CERO_ATTACHMENT_TYPES``' default: common images (never SVG: it is text, and a script
#: can hide in it), PDF, text (plain, Markdown, code) and audio.
DEFAULT_ATTACHMENT_TYPES = (
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/gif",
    "application/pdf",
    "text/plain",
    "text/markdown",
    "audio/mpeg",
    "audio/wav",
    "audio/ogg",
)


class ConfigError(Exception):
    """A setting is missing or invalid; ``str()`` is the one line shown to the operator."""


def _csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every setting of docs/api.md "Configuration", validated once at start-up."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    database_url: str = Field("sqlite:///cero.db", validation_alias="DATABASE_URL")
    host: str = Field("127.0.0.1", validation_alias="CERO_HOST", min_length=1)
    port: int = Field(3001, validation_alias="CERO_PORT", ge=0, le=65535)
    public_url_setting: str | None = Field(None, validation_alias="CERO_PUBLIC_URL")
    secret: str | None = Field(None, validation_alias="BETTER_AUTH_SECRET")
    github_client_id: str | None = Field(None, validation_alias="BETTER_AUTH_GITHUB_CLIENT_ID")
    github_client_secret: str | None = Field(
        None, validation_alias="BETTER_AUTH_GITHUB_CLIENT_SECRET"
    )
    github_url: str = Field("https://github.com", validation_alias="CERO_GITHUB_URL")
    github_api_url: str = Field("https://api.github.com", validation_alias="CERO_GITHUB_API_URL")
    gemini_api_key: str | None = Field(
        None, validation_alias=AliasChoices("GOOGLE_GENERATIVE_AI_API_KEY", "GEMINI_API_KEY")
    )
    gemini_base_url: str | None = Field(None, validation_alias="CERO_GEMINI_BASE_URL")
    gemini_first_chunk_timeout: float = Field(
        30.0, validation_alias="CERO_GEMINI_FIRST_CHUNK_TIMEOUT", gt=0
    )
    gemini_chunk_timeout: float = Field(60.0, validation_alias="CERO_GEMINI_CHUNK_TIMEOUT", gt=0)
    gemini_retry_backoff: float = Field(0.5, validation_alias="CERO_GEMINI_RETRY_BACKOFF", ge=0)
    #: How streamed chunks are read: ``wire`` (aiohttp + orjson, the same events at about a
    #: fifth of the CPU) or ``sdk`` (google-genai's models; also follows continuation tokens).
    gemini_decoder: Literal["wire", "sdk"] = Field("wire", validation_alias="CERO_GEMINI_DECODER")
    redis_url: str | None = Field(None, validation_alias="CERO_REDIS_URL")
    #: The process's Redis pool: a command waits (at most REDIS_POOL_WAIT_S) for a free one.
    redis_max_connections: int = Field(
        200, validation_alias="CERO_REDIS_MAX_CONNECTIONS", ge=4, le=10_000
    )
    #: Every key this deployment writes in Redis starts with it (several deployments, or
    #: tests, can share one Redis without seeing each other's keys).
    redis_prefix: str = Field(
        "cero:", validation_alias="CERO_REDIS_PREFIX", min_length=1, max_length=64
    )
    #: Cluster mode: the lease on a conversation's ownership (renewed every third of it).
    lease_ttl: float = Field(10.0, validation_alias="CERO_LEASE_TTL", ge=0.5, le=300)
    #: Cluster mode: an idle conversation's log (Redis stream) expires after this.
    log_ttl: float = Field(3600.0, validation_alias="CERO_LOG_TTL", ge=10, le=30 * 86400)
    trusted_origins_setting: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="CERO_TRUSTED_ORIGINS"
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="CERO_TRUSTED_PROXIES"
    )
    device_code_ttl: int = Field(1800, validation_alias="CERO_DEVICE_CODE_TTL", ge=10, le=86400)
    #: Local mode: how long a sign-in link (start-up's or ``cero-api sign-in-link``'s) works.
    local_link_ttl: int = Field(900, validation_alias="CERO_LOCAL_LINK_TTL", ge=30, le=86400)
    device_poll_interval: int = Field(5, validation_alias="CERO_DEVICE_POLL_INTERVAL", ge=0, le=300)
    device_client_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=default_client_ids, validation_alias="CERO_DEVICE_CLIENT_IDS"
    )
    device_code_limit: int = Field(30, validation_alias="CERO_DEVICE_CODE_LIMIT", ge=1)
    device_code_window: float = Field(600.0, validation_alias="CERO_DEVICE_CODE_WINDOW", gt=0)
    device_purge_interval: float = Field(
        60.0, validation_alias="CERO_DEVICE_PURGE_INTERVAL", gt=0, le=3600
    )
    max_body: int = Field(1 << 20, validation_alias="CERO_MAX_BODY", ge=1024)
    #: ``POST /api/import`` only (docs/api.md, Export and import): its body limit (the
    #: attachments' base64 included: room for the largest attachment, 20 MiB as 27 MiB of
    #: base64, beside its conversations), and the conversations and messages one import
    #: may hold.
    max_import_bytes: int = Field(64 << 20, validation_alias="CERO_MAX_IMPORT_BYTES", ge=1024)
    max_import_conversations: int = Field(
        1000, validation_alias="CERO_MAX_IMPORT_CONVERSATIONS", ge=1
    )
    max_import_messages: int = Field(20_000, validation_alias="CERO_MAX_IMPORT_MESSAGES", ge=1)
    #: Attachments (docs/api.md, Attachments): one file's limit, the bytes and files one user
    #: may keep, the types accepted (decided from the content), where the embedded default
    #: keeps the files, and how long an attachment never sent is kept.
    attachment_max_bytes: int = Field(
        20 << 20, validation_alias="CERO_ATTACHMENT_MAX_BYTES", ge=1024, le=2 << 30
    )
    attachment_quota_bytes: int = Field(
        500 << 20, validation_alias="CERO_ATTACHMENT_QUOTA_BYTES", ge=1024
    )
    attachment_max_files: int = Field(1000, validation_alias="CERO_ATTACHMENT_MAX_FILES", ge=1)
    attachment_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_ATTACHMENT_TYPES),
        validation_alias="CERO_ATTACHMENT_TYPES",
    )
    #: ``files`` (a folder, one process or a shared disk), ``database`` (PostgreSQL rows,
    #: every process of a cluster reads them) or ``auto``: ``database`` in cluster mode.
    attachment_store: Literal["auto", "files", "database"] = Field(
        "auto", validation_alias="CERO_ATTACHMENT_STORE"
    )
    attachment_dir_setting: str | None = Field(None, validation_alias="CERO_ATTACHMENT_DIR")
    attachment_unsent_hours: float = Field(
        24.0, validation_alias="CERO_ATTACHMENT_UNSENT_HOURS", gt=0, le=24 * 365
    )
    #: An upload's whole body must arrive within this many seconds (``CERO_BODY_TIMEOUT``
    #: is for every other request).
    attachment_body_timeout: float = Field(
        300.0, validation_alias="CERO_ATTACHMENT_BODY_TIMEOUT", gt=0, le=3600
    )
    #: Attachments up to this many bytes (together, per request) go to Gemini inline;
    #: larger ones through its Files API.
    gemini_inline_max_bytes: int = Field(
        14 << 20, validation_alias="CERO_GEMINI_INLINE_MAX_BYTES", ge=0
    )
    header_timeout: float = Field(10.0, validation_alias="CERO_HEADER_TIMEOUT", gt=0, le=300)
    keepalive_timeout: float = Field(15.0, validation_alias="CERO_KEEPALIVE_TIMEOUT", gt=0, le=3600)
    #: A request body must arrive whole within this many seconds of the end of its head...
    body_timeout: float = Field(15.0, validation_alias="CERO_BODY_TIMEOUT", gt=0, le=3600)
    #: ...and at this many bytes a second on average, after a 2 s grace (0: no minimum).
    min_body_rate: int = Field(1024, validation_alias="CERO_MIN_BODY_RATE", ge=0)
    max_connections: int = Field(4096, validation_alias="CERO_MAX_CONNECTIONS", ge=1)
    max_connections_per_ip: int = Field(256, validation_alias="CERO_MAX_CONNECTIONS_PER_IP", ge=1)
    connection_reserve: int = Field(16, validation_alias="CERO_CONNECTION_RESERVE", ge=1, le=1024)
    fd_headroom: int = Field(256, validation_alias="CERO_FD_HEADROOM", ge=16)
    max_request_line: int = Field(8190, validation_alias="CERO_MAX_REQUEST_LINE", ge=256)
    max_header_size: int = Field(8190, validation_alias="CERO_MAX_HEADER_SIZE", ge=256)
    max_headers: int = Field(100, validation_alias="CERO_MAX_HEADERS", ge=8, le=10_000)
    max_head_bytes: int = Field(65_536, validation_alias="CERO_MAX_HEAD_BYTES", ge=1024)
    ws_max_frame: int = Field(1 << 20, validation_alias="CERO_WS_MAX_FRAME", ge=1024)
    max_message_chars: int = Field(32_000, validation_alias="CERO_MAX_MESSAGE_CHARS", ge=1)
    #: Longest instruction text (the user's, or one conversation's): docs/api.md, Instructions.
    max_instructions_chars: int = Field(
        4_000, validation_alias="CERO_MAX_INSTRUCTIONS_CHARS", ge=1, le=100_000
    )
    max_generations_per_user: int = Field(8, validation_alias="CERO_MAX_GENERATIONS_PER_USER", ge=1)
    new_conversations_per_hour: int = Field(
        200, validation_alias="CERO_NEW_CONVERSATIONS_PER_HOUR", ge=1
    )
    ws_max_subscriptions: int = Field(100, validation_alias="CERO_WS_MAX_SUBSCRIPTIONS", ge=1)
    #: Chat sends (HTTP ``/api/chat`` and WebSocket ``send``) per user in any 60 seconds.
    sends_per_minute: int = Field(60, validation_alias="CERO_SENDS_PER_MINUTE", ge=1)
    #: WebSocket frames per second per connection (a token bucket refilled at this rate)...
    ws_frames_per_second: float = Field(
        20.0, validation_alias="CERO_WS_FRAMES_PER_SECOND", gt=0, le=100_000
    )
    #: ...holding at most this many frames at once: a socket may (re)subscribe to its whole
    #: allowance (``CERO_WS_MAX_SUBSCRIPTIONS``, 100) in one go after a reconnect.
    ws_frame_burst: int = Field(120, validation_alias="CERO_WS_FRAME_BURST", ge=1, le=1_000_000)
    #: Bytes of replay (events re-sent after a cursor) per minute: per WebSocket, and per
    #: user for SSE event streams. Past it a replay is replaced by ``reset``.
    replay_bytes_per_minute: int = Field(
        8 << 20, validation_alias="CERO_REPLAY_BYTES_PER_MINUTE", ge=64 << 10
    )
    #: Live connections (WebSockets and SSE event streams, not chat responses) per user...
    max_streams_per_user: int = Field(32, validation_alias="CERO_MAX_STREAMS_PER_USER", ge=1)
    #: ...and per client address (IPv6: per /64).
    max_streams_per_ip: int = Field(64, validation_alias="CERO_MAX_STREAMS_PER_IP", ge=1)
    #: Sign-in requests (GitHub and local) per client address in ``CERO_SIGN_IN_WINDOW`` s.
    sign_in_limit: int = Field(30, validation_alias="CERO_SIGN_IN_LIMIT", ge=1)
    sign_in_window: float = Field(600.0, validation_alias="CERO_SIGN_IN_WINDOW", gt=0, le=86400)
    actor_idle_timeout: float = Field(60.0, validation_alias="CERO_ACTOR_IDLE_TIMEOUT", gt=0)
    flush_interval: float = Field(0.5, validation_alias="CERO_FLUSH_INTERVAL", gt=0, le=1.0)
    db_write_timeout: float = Field(5.0, validation_alias="CERO_DB_WRITE_TIMEOUT", gt=0, le=120)
    db_commit_timeout: float = Field(30.0, validation_alias="CERO_DB_COMMIT_TIMEOUT", gt=0)
    #: SIGTERM: running generations may finish this long before they end ``server_shutdown``.
    drain_timeout: float = Field(25.0, validation_alias="CERO_DRAIN_TIMEOUT", ge=0, le=600)
    db_pool_size: int = Field(20, validation_alias="CERO_DB_POOL_SIZE", ge=2, le=500)
    #: Seconds between checks for freed memory to give back to the system (glibc); 0: off.
    malloc_trim_interval: float = Field(
        2.0, validation_alias="CERO_MALLOC_TRIM_INTERVAL", ge=0, le=3600
    )
    model_max_connections: int = Field(
        1000, validation_alias="CERO_MODEL_MAX_CONNECTIONS", ge=1, le=100_000
    )
    #: Admission control (server/limits/admission.py): a start is refused only when this process's
    #: own work is past capacity: past the floor, and CPU *and* loop lag past their limits.
    #: How long a looked-up bearer/cookie session is remembered in the process
    #: (server/auth/sessions.py); 0 asks the database on every request.
    auth_cache_seconds: float = Field(
        30.0, validation_alias="CERO_AUTH_CACHE_SECONDS", ge=0, le=300
    )
    max_loop_lag: float = Field(0.25, validation_alias="CERO_MAX_LOOP_LAG", ge=0)
    max_cpu: float = Field(0.9, validation_alias="CERO_MAX_CPU", gt=0, le=64)
    admission_floor: int = Field(16, validation_alias="CERO_ADMISSION_FLOOR", ge=0)
    admission_wait: float = Field(10.0, validation_alias="CERO_ADMISSION_WAIT", ge=0, le=600)
    admission_queue: int = Field(1000, validation_alias="CERO_ADMISSION_QUEUE", ge=0)
    demo_token_delay: float = Field(0.02, validation_alias="CERO_DEMO_TOKEN_DELAY", ge=0)
    #: After a conversation's first answer its model writes a short title (docs/api.md,
    #: Conversations); off: the first message's words stay the title.
    generate_titles: bool = Field(True, validation_alias="CERO_GENERATE_TITLES")
    #: How long a title may take; past it the first message's words stay the title.
    title_timeout: float = Field(20.0, validation_alias="CERO_TITLE_TIMEOUT", gt=0, le=600)
    sse_ping_interval: float = Field(15.0, validation_alias="CERO_SSE_PING_INTERVAL", gt=0)
    ws_heartbeat: float = Field(20.0, validation_alias="CERO_WS_HEARTBEAT", gt=0)
    session_recheck: float = Field(1.0, validation_alias="CERO_SESSION_RECHECK", gt=0, le=3600)
    #: ``host:port`` of a second listener serving only ``GET /metrics`` (Prometheus); unset,
    #: empty or ``off``: none. Not on by default: processes sharing a machine (a cluster,
    #: tests) would collide on any fixed port.
    metrics_address: str | None = Field(None, validation_alias="CERO_METRICS_ADDRESS")
    #: With it, ``GET /metrics`` on the API's own listener answers a scraper sending
    #: ``Authorization: Bearer <token>``; without it, that path answers 404.
    metrics_token: str | None = Field(
        None, validation_alias="CERO_METRICS_TOKEN", min_length=16, max_length=512
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", validation_alias="CERO_LOG_LEVEL"
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", validation_alias="CERO_LOG_FORMAT"
    )

    @field_validator(
        "trusted_origins_setting",
        "trusted_proxies",
        "device_client_ids",
        "attachment_types",
        mode="before",
    )
    @classmethod
    def _split_csv(cls, value: object) -> object:
        return _csv(value)

    @field_validator("device_client_ids")
    @classmethod
    def _known_clients_when_empty(cls, value: list[str]) -> list[str]:
        """An empty ``CERO_DEVICE_CLIENT_IDS`` is the default (the Cero CLIs), never "any":
        accepting every id takes the explicit ``*``."""
        return value or default_client_ids()

    @field_validator("attachment_types")
    @classmethod
    def _check_attachment_types(cls, value: list[str]) -> list[str]:
        types = [t.lower() for t in value]
        for mime in types:
            if mime.count("/") != 1 or not all(mime.split("/")):
                raise ValueError(f"{mime!r} is not a MIME type like image/png")
            if mime == "image/svg+xml":
                raise ValueError("image/svg+xml is never accepted (SVG is stored as text/plain)")
        if not types:
            raise ValueError("name at least one type")
        return types

    @field_validator("metrics_address")
    @classmethod
    def _check_metrics_address(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in ("", "off"):
            return None
        host, port = _host_port(value.strip())
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @field_validator("metrics_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if value.startswith("sqlite:///"):
            if not value.removeprefix("sqlite:///"):
                raise ValueError("sqlite URL needs a path, e.g. sqlite:///cero.db")
            return value
        if value.startswith(("postgresql://", "postgres://")):
            parts = urlsplit(value)
            if not parts.hostname and "host=" not in (parts.query or ""):
                raise ValueError("postgresql URL needs a host")
            try:
                parts.port  # noqa: B018 - raises on a bad port
            except ValueError as exc:
                raise ValueError(f"bad port in URL ({exc})") from None
            return value
        raise ValueError("must start with sqlite:/// or postgresql://")

    @field_validator("public_url_setting", "gemini_base_url", "github_url", "github_api_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None if value == "" else value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @field_validator("trusted_origins_setting")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        out = []
        for origin in value:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{origin!r} is not an origin like https://example.com")
            out.append(f"{parts.scheme}://{parts.netloc}".lower())
        return out

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    @model_validator(mode="after")
    def _check_github_pair(self) -> Settings:
        if bool(self.github_client_id) != bool(self.github_client_secret):
            raise ValueError(
                "BETTER_AUTH_GITHUB_CLIENT_ID and BETTER_AUTH_GITHUB_CLIENT_SECRET go together"
            )
        if self.secret is not None and len(self.secret) < 16:
            raise ValueError("BETTER_AUTH_SECRET must be at least 16 characters")
        if self.attachment_store == "database" and self.is_sqlite:
            raise ValueError("CERO_ATTACHMENT_STORE=database needs DATABASE_URL to be PostgreSQL")
        if self.redis_url and self.is_sqlite:
            raise ValueError(
                "CERO_REDIS_URL (cluster mode) needs DATABASE_URL to be PostgreSQL, not SQLite"
            )
        if self.secret is None and not self.local_mode:
            raise ValueError(
                "BETTER_AUTH_SECRET is required unless the server runs in local mode "
                "(GitHub not configured and CERO_HOST on loopback)"
            )
        return self

    # -- derived -----------------------------------------------------------------------

    @property
    def public_url(self) -> str:
        if self.public_url_setting:
            return self.public_url_setting
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def metrics_listen(self) -> tuple[str, int] | None:
        """``(host, port)`` of the metrics listener (``CERO_METRICS_ADDRESS``), or ``None``."""
        return None if self.metrics_address is None else _host_port(self.metrics_address)

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def trusted_origins(self) -> frozenset[str]:
        parts = urlsplit(self.public_url)
        own = f"{parts.scheme}://{parts.netloc}".lower()
        return frozenset([own, *self.trusted_origins_setting])

    @property
    def github_enabled(self) -> bool:
        return bool(self.github_client_id and self.github_client_secret)

    @property
    def loopback_only(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    @property
    def local_mode(self) -> bool:
        """Local sign-in link: GitHub not configured and bound to loopback only."""
        return not self.github_enabled and self.loopback_only

    @property
    def cluster_mode(self) -> bool:
        """Several processes share actors' ownership, logs and limits through Redis."""
        return self.redis_url is not None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:///")

    @property
    def sqlite_path(self) -> Path:
        """``sqlite:///rel`` → ``rel``; ``sqlite:////abs`` → ``/abs`` (no lstrip!)."""
        return Path(self.database_url.removeprefix("sqlite:///"))

    @property
    def data_dir(self) -> Path:
        """The data folder: the SQLite database's, else the working directory."""
        return self.sqlite_path.parent if self.is_sqlite else Path(".")

    @property
    def attachment_dir(self) -> Path:
        """Where the ``files`` attachment store keeps its files."""
        if self.attachment_dir_setting:
            return Path(self.attachment_dir_setting)
        return self.data_dir / "attachments"

    @property
    def attachment_backend(self) -> Literal["files", "database"]:
        if self.attachment_store == "auto":
            return "database" if self.cluster_mode else "files"
        return self.attachment_store

    @property
    def attachment_body_limit(self) -> int:
        """The upload's body limit: one file and its multipart framing."""
        return self.attachment_max_bytes + (64 << 10)

    @cached_property
    def auth_secret(self) -> str:
        """The signing secret; in local mode a generated one kept beside the database."""
        if self.secret:
            return self.secret
        folder = self.sqlite_path.parent if self.is_sqlite else Path(".")
        path = folder / ".cero-secret"
        folder.mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            existing = _read_secret(path)
            if existing is not None:
                return existing
            if attempt:
                path.unlink(missing_ok=True)  # still too short to be a secret: replace it
            text = secrets.token_urlsafe(32)
            try:
                # Created owner-only in one step (no window under the umask's mode), and
                # only if absent: of two processes starting at once, the first one wins.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                time.sleep(0.05)  # another process may be writing it: read it again
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(text + "\n")
            return text
        raise RuntimeError(f"Could not create the secret file {path}")


def _host_port(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → ``(host, port)``; raises ``ValueError``."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("must be host:port, e.g. 127.0.0.1:9464 (or off)")
    return host, int(port)


def _read_secret(path: Path) -> str | None:
    """The secret kept in ``path`` (at least 32 characters), or ``None``."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text if len(text) >= 32 else None


def _describe(error: ValidationError) -> str:
    path, message = first_error(error, "")
    field = path.split(".")[0]
    info = Settings.model_fields.get(field)
    name = field
    if info is not None and info.validation_alias is not None:
        alias = info.validation_alias
        if isinstance(alias, str):
            name = alias
        elif isinstance(alias, AliasChoices):
            name = "/".join(str(choice) for choice in alias.choices)
    if not name:
        return f"configuration error: {message}"
    return f"configuration error: {name}: {message}"


def load_settings(*, env_file: str | None = ".env", **overrides: object) -> Settings:
    """Read and validate the settings; raise :class:`ConfigError` with one line on error.

    ``overrides`` use the field names (tests pass them instead of touching the environment).
    """
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
