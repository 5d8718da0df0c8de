"""The objects an application shares, each on its own typed key (no module globals)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .amqp.publisher import Publisher
    from .auth.access import TokenIssuer
    from .auth.throttle import LoginThrottle
    from .config import Config
    from .http.validation import SchemaStore
    from .services import Services
    from .webhooks.listener import Recorder

CONFIG: web.AppKey[Config] = web.AppKey("config")
SERVICES: web.AppKey[Services] = web.AppKey("services")
SCHEMAS: web.AppKey[SchemaStore] = web.AppKey("schemas")
ISSUER: web.AppKey[TokenIssuer] = web.AppKey("issuer")
# Failed logins of this instance (auth/throttle.py).
THROTTLE: web.AppKey[LoginThrottle] = web.AppKey("throttle")
# Set only with KAZOO_VM_AMQP_URL.
AMQP: web.AppKey[Publisher] = web.AppKey("amqp")
WEBHOOKS: web.AppKey[Recorder] = web.AppKey("webhooks")
# Handlers that answer without a token (the auth endpoints, schemas).
PUBLIC_HANDLERS: web.AppKey[set[Callable[[web.Request], Awaitable[web.StreamResponse]]]] = web.AppKey(
    "public_handlers"
)
