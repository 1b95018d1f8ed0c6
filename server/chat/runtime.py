"""What the chat needs for the app's lifetime, started and stopped together (cleanup_ctx):
the catalog, the model providers, the batch writer and its janitor, the flusher, the
actor registry, the per-user limits and admission control, the titles written after a
first answer; at start-up, rows left ``streaming`` by a previous process become
``interrupted``."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from actors.api import AccountFeeds, ActorDeps, Flusher, Registry, build_request
from actors.models.base import ModelProvider
from actors.models.catalog import Catalog
from actors.models.demo import DemoProvider
from actors.models.titles import TitleWriter
from server.chat.titles import Titler
from server.core.app_keys import CATALOG, CLIENT_LOCKS, REDIS, REDIS_HEALTH, REGISTRY, SETTINGS
from server.limits.admission import ADMISSION, Admission, AdmissionLimits
from server.limits.user_limits import USER_LIMITS, memory_user_limits
from server.ops.metrics import METRICS
from server.storage.account_channel import ACCOUNT, AccountChannel
from server.storage.attachments import BLOBS
from server.storage.batch_writer import WRITER, BatchWriter
from server.storage.chat_store import PiccoloConversationStore
from server.storage.db import ENGINE

log = structlog.get_logger(__name__)


def make_providers(app: web.Application) -> dict[str, ModelProvider]:
    settings = app[SETTINGS]
    providers: dict[str, ModelProvider] = {"demo": DemoProvider(settings.demo_token_delay)}
    if settings.gemini_api_key:
        from actors.models.gemini import GeminiProvider

        providers["gemini"] = GeminiProvider(
            settings.gemini_api_key,
            base_url=settings.gemini_base_url,
            first_chunk_timeout=settings.gemini_first_chunk_timeout,
            chunk_timeout=settings.gemini_chunk_timeout,
            backoff_base=settings.gemini_retry_backoff,
            # Three attempts in all: "retried at most 3 times" is an upper bound, and three
            # 429s in a row must end as `rate_limited` (issue 5's acceptance).
            max_retries=2,
            max_connections=settings.model_max_connections,
            decoder=settings.gemini_decoder,
            inline_max_bytes=settings.gemini_inline_max_bytes,
        )
    return providers


async def chat_runtime(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the catalog, the providers and the actor registry."""
    settings = app[SETTINGS]
    app[CATALOG] = Catalog.load(
        gemini_enabled=bool(settings.gemini_api_key), offline_fallback=settings.secret is None
    )
    providers = make_providers(app)
    writer = BatchWriter(app[ENGINE], timeout=settings.db_write_timeout)
    await writer.start()
    app[WRITER] = writer
    # One lock per (user, clientMessageId) being sent: a retry waits for its first send.
    app[CLIENT_LOCKS] = weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock]()
    node = None
    client = app[REDIS]
    if client is not None:
        from cluster.process import ClusterProcess

        catalog = app[CATALOG]
        node = ClusterProcess(
            client,
            prefix=settings.redis_prefix,
            lease_ttl=settings.lease_ttl,
            log_ttl=settings.log_ttl,
            resolve_model=catalog.resolve,
            # Looked up per send: cluster mode's limits replace the in-memory ones later.
            adopt_slot=lambda user_id, token: app[USER_LIMITS].adopt_generation(user_id, token),
        )
    # Cluster mode: the answer rows are written under this process's lease (fenced).
    store = PiccoloConversationStore(
        writer,
        fence_of=None if node is None else node.fence_of,
        # Another process may change them: cluster mode reads them for every send.
        remember_instructions=node is None,
        blobs=app[BLOBS],
    )
    if node is None:
        interrupted = await store.interrupt_streaming()
        if interrupted:
            log.warning("interrupted_messages_marked", count=interrupted)
    metrics = app[METRICS]
    if node is None:
        feeds = AccountFeeds()
    else:
        from cluster.account_feed import ClusterAccountFeeds

        assert client is not None

        feeds = ClusterAccountFeeds(client, app[REDIS_HEALTH], settings.redis_prefix)
    account = app[ACCOUNT] = AccountChannel(feeds)
    account.start()
    titler = None
    if settings.generate_titles:
        writers = {name: p for name, p in providers.items() if isinstance(p, TitleWriter)}
        titler = Titler(account, app[CATALOG], writers, timeout=settings.title_timeout)
        titler.start()
    flusher = Flusher(store, settings.flush_interval)
    flusher.on_flush = metrics.observe_flush
    deps = ActorDeps(
        store=store,
        providers=providers,
        build_request=build_request,
        flusher=flusher,
        idle_timeout=settings.actor_idle_timeout,
        on_token=metrics.tokens.inc,
        telemetry=metrics,
        commit_timeout=settings.db_commit_timeout,
        cluster=node,
        account=account,
    )
    registry = Registry(deps)
    app[REGISTRY] = registry
    admission = app[ADMISSION] = Admission(
        AdmissionLimits(
            floor=settings.admission_floor,
            max_cpu=settings.max_cpu,
            max_lag=settings.max_loop_lag,
            wait=settings.admission_wait,
            queue=settings.admission_queue,
        ),
        running=registry.generation_count,
    )
    admission.start()
    if node is not None:
        # Before the sweep: what it closes is counted (generations{interrupted,owner_lost}).
        metrics.bind_cluster(node)
        node.start(registry)
        # Only rows whose lease is gone: a live neighbour's answers are left alone.
        try:
            swept = await node.sweep()
        except Exception as exc:  # Redis down at start: the watcher and claims catch up
            log.warning("cluster_sweep_failed", error=repr(exc)[:200])
        else:
            if swept:
                log.warning("interrupted_conversations_recovered", count=swept)
    app[USER_LIMITS] = memory_user_limits(
        max_generations=settings.max_generations_per_user,
        new_conversations_per_hour=settings.new_conversations_per_hour,
        sends_per_minute=settings.sends_per_minute,
        on_refusal=metrics.limit_refusals_by,
    )
    metrics.bind_registry(registry)
    metrics.bind_writer(writer, store.janitor)
    metrics.bind_admission(admission)
    for name, provider in providers.items():
        metrics.bind_provider(name, provider)
    try:
        yield
    finally:
        await admission.stop()
        await registry.close()
        if titler is not None:
            await titler.close()
        await account.close()
        if node is not None:
            await node.close()
        await flusher.stop()
        await store.janitor.close()
        await writer.close()
        for provider in providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()


async def stop_actors(app: web.Application) -> None:
    """on_shutdown: end generations (``server_shutdown``) while the database is still open."""
    await app[REGISTRY].close()
