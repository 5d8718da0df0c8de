"""``create_app(config)``: wiring only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from . import appkeys
from .auth.access import TokenIssuer
from .auth.throttle import LoginThrottle
from .config import Config
from .handlers.routes import setup_routes
from .http.middleware import MAX_HEADER_SIZE, PARSER_FIELD_SIZE, auth_middleware, envelope_middleware, http_log
from .http.validation import SchemaStore
from .notify.worker import Notifier
from .services import Services
from .storage.errors import StorageError
from .storage.moves import STALE_AFTER
from .webhooks.listener import Recorder, webhooks_middleware
from .webhooks.sender import Sender

log = logging.getLogger(__name__)
# Room for multipart framing around the largest accepted payload.
MULTIPART_OVERHEAD = 256 * 1024
MOVE_RECOVERY_INTERVAL = 30.0



def server_options(config: Config) -> dict[str, Any]:
    """``AppRunner`` options of the HTTP server (``serve`` and the tests alike): an idle
    or slowly-sending connection is closed after ``keepalive_timeout`` seconds; a request
    line over MAX_HEADER_SIZE, or a header over PARSER_FIELD_SIZE, is refused by aiohttp
    itself (plain-text 400, logged as one line by ``http_log``)."""
    return {"keepalive_timeout": config.keepalive_timeout, "max_line_size": MAX_HEADER_SIZE,
            "max_field_size": PARSER_FIELD_SIZE, "logger": http_log}


def create_app(config: Config, couch_url: str) -> web.Application:
    """The API over the CouchDB server at ``couch_url`` (started by the caller)."""
    app = web.Application(
        # envelope first: it must wrap everything, auth included.
        middlewares=[envelope_middleware, auth_middleware, webhooks_middleware],
        client_max_size=config.max_upload_size + MULTIPART_OVERHEAD,
    )
    app[appkeys.CONFIG] = config
    app[appkeys.SCHEMAS] = SchemaStore()
    app[appkeys.THROTTLE] = LoginThrottle.from_config(config)

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        services = Services.connect(couch_url, timeout=config.couch_timeout,
                                    connect_timeout=config.couch_connect_timeout, cache_ttl=config.cache_ttl)
        app[appkeys.SERVICES] = services
        app[appkeys.ISSUER] = TokenIssuer(config, services)
        try:
            await services.store.setup()
            if config.move_recovery:  # moves a killed process left half done, finished before serving
                await services.moves.recover()
        except StorageError as error:  # the store may come later; requests get 503 until then
            log.warning("could not prepare the store at startup: %r", error)
        recovery = None
        if config.move_recovery:
            recovery = asyncio.create_task(_recover_moves(services), name="move-recovery")
        worker = None
        if config.smtp_url is not None:
            worker = asyncio.create_task(Notifier(config, services).run(), name="voicemail-to-email")
        publisher = None
        if config.amqp_url is not None:  # beside Kazoo: its RabbitMQ (the library is loaded only then)
            from .amqp.publisher import Publisher

            publisher = Publisher(config.amqp_url, services, retention_seconds=config.retention_seconds)
            publisher.start()
            app[appkeys.AMQP] = publisher
        hooks: list[asyncio.Task[None]] = []
        if config.webhooks:
            recorder = Recorder(services)
            app[appkeys.WEBHOOKS] = recorder
            services.events.subscribe(recorder.hear)
            hooks = [asyncio.create_task(recorder.run(), name="webhook-recorder"),
                     asyncio.create_task(Sender(config, services, recorder.recorded).run(), name="webhooks")]
        yield
        if publisher is not None:
            await publisher.close()
        for task in (recovery, worker, *hooks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await services.close()

    app.cleanup_ctx.append(services_ctx)
    setup_routes(app)
    return app


async def _recover_moves(services: Services) -> None:
    """Now and then, settle the moves other processes left half done (see storage.moves)."""
    while True:
        await asyncio.sleep(MOVE_RECOVERY_INTERVAL)
        try:
            await services.moves.recover(older_than=STALE_AFTER)
        except StorageError as error:
            log.warning("move recovery: %r", error)
