"""``create_app(config)``: wiring only."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from . import appkeys
from .auth import TokenIssuer
from .config import Config
from .middleware import auth_middleware, envelope_middleware
from .notify.worker import Notifier
from .routes import setup_routes
from .services import Services
from .storage.errors import StorageError
from .validation import SchemaStore

log = logging.getLogger(__name__)
# Room for multipart framing around the largest accepted payload.
MULTIPART_OVERHEAD = 256 * 1024


def create_app(config: Config, couch_url: str) -> web.Application:
    """The API over the CouchDB server at ``couch_url`` (started by the caller)."""
    app = web.Application(
        # envelope first: it must wrap everything, auth included.
        middlewares=[envelope_middleware, auth_middleware],
        client_max_size=config.max_upload_size + MULTIPART_OVERHEAD,
    )
    app[appkeys.CONFIG] = config
    app[appkeys.SCHEMAS] = SchemaStore()

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        services = Services.connect(couch_url, timeout=config.couch_timeout,
                                    connect_timeout=config.couch_connect_timeout, cache_ttl=config.cache_ttl)
        app[appkeys.SERVICES] = services
        app[appkeys.ISSUER] = TokenIssuer(config, services)
        try:
            await services.store.setup()
        except StorageError as error:  # the store may come later; requests get 503 until then
            log.warning("could not prepare the store at startup: %r", error)
        worker = None
        if config.smtp_url is not None:
            worker = asyncio.create_task(Notifier(config, services).run(), name="voicemail-to-email")
        yield
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        await services.close()

    app.cleanup_ctx.append(services_ctx)
    setup_routes(app)
    return app
