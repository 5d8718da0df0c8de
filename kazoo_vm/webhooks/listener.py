"""From events to pending deliveries, written before the API answers.

:class:`Recorder` listens on ``services.events``. An event published while a request
runs (``webhooks_middleware`` sets a context variable for it) is kept with the request;
when the handler is done, before the answer leaves, the deliveries it causes — one per
event and matching hook — are written to CouchDB in one request. So an event whose write
was answered is pending in CouchDB whatever happens to this process afterwards. Events
published outside any request (voicemail-to-email's ``voicemail_saved``) are written by
a background task a moment later. Document writes outside requests (voicemail-to-email
bookkeeping, recovery) fire no ``object`` hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from .. import appkeys
from ..events import DocChanged, Event, VoicemailNotice
from ..http.envelope import NODE
from ..services import Services
from ..storage.errors import NotFound, StorageError
from . import hooks

log = logging.getLogger(__name__)
Stamped = tuple[str, Event]  # an event and its place in the order of deliveries
_REQUEST_EVENTS: ContextVar[list[Stamped] | None] = ContextVar("webhook_request_events", default=None)
RECORD_TRIES = 3


class Recorder:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._instance = uuid.uuid4().hex[:8]
        self._sequence = itertools.count()
        self._later: list[Stamped] = []
        self._later_added = asyncio.Event()
        self.recorded = asyncio.Event()  # set whenever deliveries were written (the sender wakes)

    def hear(self, event: Event) -> None:
        """The events listener: keep what a hook may want, nothing else. Each event is
        given its place in the order when it is heard, so that deliveries recorded late
        (a store outage) or again (a retry after a partial write, which then finds the
        ones written already) keep the order of the events."""
        if isinstance(event, DocChanged):
            if event.doc_type not in hooks.OBJECT_TYPES:
                return
            pending = _REQUEST_EVENTS.get()
            if pending is not None:  # writes outside requests fire no object hook
                pending.append((self._stamp(), event))
        elif isinstance(event, VoicemailNotice):
            pending = _REQUEST_EVENTS.get()
            if pending is not None:
                pending.append((self._stamp(), event))
            else:
                self._later.append((self._stamp(), event))
                self._later_added.set()

    def _stamp(self) -> str:
        # Ordered by time, then by this process's sequence (events of one request keep
        # their order).
        return f"{time.time_ns():020d}-{self._instance}-{next(self._sequence):010d}"

    @contextlib.asynccontextmanager
    async def collecting(self) -> AsyncIterator[None]:
        """Keep the events published inside; record their deliveries on the way out."""
        events: list[Stamped] = []
        token = _REQUEST_EVENTS.set(events)
        try:
            yield
        finally:
            _REQUEST_EVENTS.reset(token)
            if events:
                await self._record_or_defer(events)

    async def _record_or_defer(self, events: list[Stamped]) -> None:
        for attempt in range(RECORD_TRIES):
            try:
                await self.record(events)
                return
            except StorageError as error:
                if attempt == RECORD_TRIES - 1:
                    log.error("webhook deliveries of %d events not recorded, kept in memory: %r", len(events), error)
                    self._later.extend(events)
                    self._later_added.set()
                    return
                await asyncio.sleep(0.1 * (attempt + 1))

    async def run(self) -> None:
        """Record the events heard outside requests, until cancelled."""
        while True:
            await self._later_added.wait()
            self._later_added.clear()
            events, self._later = self._later, []
            try:
                await self.record(events)
            except StorageError as error:
                log.warning("webhook deliveries not recorded yet: %r", error)
                self._later[:0] = events
                await asyncio.sleep(1.0)
                self._later_added.set()

    async def record(self, events: list[Stamped]) -> int:
        """Write the deliveries these events cause; returns how many."""
        deliveries: list[dict[str, Any]] = []
        for order, event in events:
            if isinstance(event, DocChanged):
                body = hooks.object_body(event)
                hook_event = hooks.OBJECT
            elif isinstance(event, VoicemailNotice):
                body = hooks.notification_body(event, NODE)
                hook_event = hooks.NOTIFICATIONS
            else:
                continue
            if body is None:
                continue
            account_id = str(body["account_id"])
            for hook in await self._hooks_for(account_id):
                if not hooks.listens(hook, hook_event, account_id) or not hooks.passes_modifiers(hook, body):
                    continue
                if hook_event == hooks.OBJECT and not hooks.wants_object(hook, body):
                    continue
                if hook_event == hooks.NOTIFICATIONS and not hooks.wants_notification(hook, body["event_name"]):
                    continue
                deliveries.append(_delivery(hook, hook_event, body, order))
        await self._services.webhook_deliveries.add(deliveries)
        if deliveries:
            self.recorded.set()
        return len(deliveries)

    async def _hooks_for(self, account_id: str) -> list[dict[str, Any]]:
        """Hooks of the account and of its ancestors (``pvt_tree``)."""
        try:
            account = await self._services.accounts.fetch(account_id, cached=True)
        except NotFound:
            return []
        tree = account.get("pvt_tree")
        ancestors = [parent for parent in tree if isinstance(parent, str) and parent != account_id] \
            if isinstance(tree, list) else []
        return await self._services.webhooks.of_accounts([account_id, *ancestors])



def _delivery(hook: dict[str, Any], hook_event: str, body: dict[str, Any], order: str) -> dict[str, Any]:
    # The id repeats the hook so one range read gives a hook's queue; it is the same
    # each time one event is recorded, so a second write of it is a conflict, not a copy.
    return {"_id": f"{hook['_id']}-{order}", "pvt_type": "webhook_delivery", "hook_id": hook["_id"],
            "account_id": hook.get("pvt_account_id"), "hook_event": hook_event, "order": order,
            "body": body, "created": time.time()}


@web.middleware
async def webhooks_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The deliveries a request causes are in CouchDB before its answer is sent."""
    recorder = request.app.get(appkeys.WEBHOOKS)
    if recorder is None:
        return await handler(request)
    async with recorder.collecting():
        return await handler(request)
