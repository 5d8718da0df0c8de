"""The delivery worker every instance runs (unless ``KAZOO_VM_WEBHOOKS=false``).

Each round it lists the hooks with pending deliveries and serves each one that no other
instance serves: it takes the hook's lease (a revision-checked write of the hook's queue
document, so two instances never send one hook's events), then sends the hook's
deliveries oldest first, one at a time, removing each once it is answered.

One delivery is sent the way Kazoo's ``webhooks_util`` fires a hook: ``get`` (the body
in the query string), ``post``/``put`` as ``form-data`` (urlencoded) or ``json``, with
``X-Hook-ID`` and ``X-Account-ID``; up to ``retries`` attempts in all (clamped to 1..5),
``KAZOO_VM_WEBHOOK_RETRY_PAUSE`` apart, again only after a transport error (no answer,
connection refused, timeout). Any answer ends the delivery; an answer other than 200 is
a failure, as for Kazoo. Unlike Kazoo, a delivery whose attempts all got no answer is not
dropped: the hook's queue stops there (so events stay in order) and is tried again after
``KAZOO_VM_WEBHOOK_BACKOFF`` seconds, doubling, up to ``MAX_BACKOFF``. After
``FAILURE_COUNT`` (Kazoo's 6) failed deliveries in a row, the hook is disabled as Kazoo's
disabler does it (``enabled: false``, ``pvt_disabled_message: "too many failed attempts"``)
and its pending deliveries are dropped.

Every attempt that failed (and, with ``log_successful_attempts`` in
``system_config/webhooks``, every success) is recorded as Kazoo records it: a
``webhook_attempt`` document in the account's MODB, which ``…/webhooks/attempts`` lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import logging
import secrets
import time
import uuid
from typing import Any, Literal

import aiohttp
from yarl import URL

from ..config import Config
from ..kazoo.documents import as_dict, gregorian_now
from ..services import Services
from ..storage.accounts import system_config
from ..storage.errors import Conflict, NotFound, StorageError
from ..storage.ttl_cache import TtlCache
from . import hooks

log = logging.getLogger(__name__)
BATCH = 50
MAX_RESPONSE_BODY = 4096  # of a receiver's answer, kept in the attempt's record
SYSTEM_CONFIG, LOG_SUCCESS = "webhooks", "log_successful_attempts"
MAX_BACKOFF = 600.0
Outcome = Literal["sent", "refused", "unreachable"]


class Sender:
    def __init__(self, config: Config, services: Services, wake: asyncio.Event) -> None:
        self._config = config
        self._services = services
        self._wake = wake
        self.instance = uuid.uuid4().hex
        self._serving: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._log_success: TtlCache[str, bool] = TtlCache(config.cache_ttl)

    async def run(self) -> None:
        """Deliver until cancelled (a stopping instance hands its leases back)."""
        timeout = aiohttp.ClientTimeout(total=self._config.webhook_request_timeout,
                                        sock_connect=self._config.webhook_connect_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            try:
                while True:
                    try:
                        await self.round()
                    except StorageError as error:
                        log.warning("webhook round failed: %r", error)
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for returns instead of
                    # raising when cancelled just as the event is set, and a stopping
                    # instance then waited for ever for this task (a CI run hung in teardown)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._config.webhook_poll):
                            await self._wake.wait()
                    self._wake.clear()
            finally:
                tasks = list(self._serving.values())
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def round(self) -> None:
        """Start serving every hook with pending deliveries that this instance does not
        serve already."""
        for hook_id in await self._services.webhook_deliveries.hooks_pending():
            if hook_id not in self._serving:
                task = asyncio.create_task(self._serve(hook_id), name=f"webhook-{hook_id}")
                self._serving[hook_id] = task
                task.add_done_callback(functools.partial(self._served, hook_id))

    def _served(self, hook_id: str, _task: asyncio.Task[None]) -> None:
        self._serving.pop(hook_id, None)

    async def _serve(self, hook_id: str) -> None:
        deliveries = self._services.webhook_deliveries
        try:
            queue = await deliveries.queue(hook_id)
            now = time.time()
            if queue.get("by") not in (None, self.instance) and float(queue.get("until") or 0) > now:
                return  # another instance serves it
            if float(queue.get("next_try") or 0) > now:
                return  # backing off after a failure
            queue.update(by=self.instance, until=now + self._config.webhook_lease)
            try:
                await deliveries.save_queue(queue)
            except Conflict:
                return  # another instance took it first
        except StorageError as error:
            log.warning("webhook %s: queue not read: %r", hook_id, error)
            return
        try:
            await self._send_queue(hook_id, queue)
        except asyncio.CancelledError:
            await self._release(queue)
            raise
        except StorageError as error:  # the lease runs out; the next round resumes
            log.warning("webhook %s: deliveries interrupted: %r", hook_id, error)
        if queue.get("by") is None and float(queue.get("next_try") or 0) <= time.time():
            self._wake.set()  # deliveries recorded meanwhile are looked at at once

    async def _send_queue(self, hook_id: str, queue: dict[str, Any]) -> None:
        deliveries = self._services.webhook_deliveries
        while True:
            hook = await self._services.webhooks.fetch_any(hook_id)
            if hook is None or not hooks.is_enabled(hook):
                dropped = await deliveries.drop_all(hook_id)
                log.info("webhook %s deleted or disabled: %d pending deliveries dropped", hook_id, dropped)
                await self._release(queue)
                return
            batch = await deliveries.of_hook(hook_id, BATCH)
            if not batch:
                await self._release(queue)
                return
            for delivery in batch:
                await self._renew(queue)
                if not await deliveries.still_pending(delivery):
                    continue
                outcome = await self._fire(hook, delivery)
                if outcome == "unreachable":
                    await self._failed(hook, queue, drop=None)
                    return
                if outcome == "sent":
                    queue["failed_rounds"] = 0
                    await deliveries.done(delivery)
                elif await self._failed(hook, queue, drop=delivery):
                    return

    async def _failed(self, hook: dict[str, Any], queue: dict[str, Any], *, drop: dict[str, Any] | None) -> bool:
        """Count a failed delivery (``drop``: answered, so it is done); returns whether the
        queue stops here (backing off, or the hook disabled)."""
        deliveries = self._services.webhook_deliveries
        failed = int(queue.get("failed_rounds") or 0) + 1
        queue["failed_rounds"] = failed
        if drop is not None:
            await deliveries.done(drop)
        if failed >= hooks.FAILURE_COUNT:
            await self._disable(hook)
            dropped = await deliveries.drop_all(hook["_id"])
            log.warning("webhook %s disabled after %d failed deliveries; %d pending dropped", hook["_id"], failed,
                        dropped)
            queue.update(failed_rounds=0, next_try=0)
            await self._release(queue)
            return True
        if drop is not None:
            return False
        backoff = min(self._config.webhook_backoff * 2 ** (failed - 1), MAX_BACKOFF)
        queue["next_try"] = time.time() + backoff
        await self._release(queue)
        return True

    async def _fire(self, hook: dict[str, Any], delivery: dict[str, Any]) -> Outcome:
        assert self._session is not None
        body = hooks.with_custom_data(hook, delivery.get("body") or {})
        uri = str(hook.get("uri") or "")
        verb = hooks.verb(hook)
        headers = {"X-Hook-ID": str(hook["_id"]), "X-Account-ID": str(hook.get("pvt_account_id"))}
        data: bytes | None = None
        url = URL(uri)
        if verb == "get":
            query = hooks.querystring(body)
            url = URL(uri + ("&" if "?" in uri else "?") + query, encoded=True) if query else url
        elif hooks.body_format(hook) == "json":
            headers["Content-Type"] = "application/json"
            data = json.dumps(body, indent=2, ensure_ascii=False).encode()
        else:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            data = hooks.querystring(body).encode()
        request = hooks.attempt_request(hook, secrets.token_hex(5), uri, headers,
                                        (data or b"").decode("utf-8", "replace"))
        total = hooks.attempts(hook)
        for attempt in range(1, total + 1):
            retries = total - attempt + 1  # Kazoo's count: the attempts left, this one included
            try:
                async with self._session.request(verb.upper(), url, data=data, headers=headers) as response:
                    answer = await response.content.read(MAX_RESPONSE_BODY)
                    status, answer_headers = response.status, dict(response.headers)
            except (aiohttp.ClientError, TimeoutError, OSError) as error:
                log.info("webhook %s: attempt %d/%d of %s failed: %r", hook["_id"], attempt, total,
                         delivery["_id"], error)
                await self._record(hook, hooks.unanswered_attempt(request, client_error(error), retries))
                if attempt < total:
                    await asyncio.sleep(self._config.webhook_retry_pause)
                continue
            text = answer.decode("utf-8", "replace")
            if status != 200:
                log.info("webhook %s: %s answered %d for %s", hook["_id"], uri, status, delivery["_id"])
                await self._record(hook, hooks.answered_attempt(request, status, answer_headers, text, retries))
                return "refused"
            if await self._log_successes():
                await self._record(hook, hooks.answered_attempt(request, status, answer_headers, text, None))
            return "sent"
        return "unreachable"

    async def _record(self, hook: dict[str, Any], attempt: dict[str, Any]) -> None:
        """Keep the attempt for the hook's history (best effort: a store that does not
        take it in 5 s does not hold the deliveries up)."""
        try:
            async with asyncio.timeout(5):
                await self._services.webhook_attempts.record(str(hook.get("pvt_account_id")), attempt,
                                                             gregorian_now())
        except (StorageError, TimeoutError, ValueError) as error:  # ValueError: a hook without a valid account
            log.warning("webhook %s: attempt not recorded: %r", hook.get("_id"), error)

    async def _log_successes(self) -> bool:
        """``log_successful_attempts`` of ``system_config/webhooks`` (Kazoo's default:
        false), read again after ``KAZOO_VM_CACHE_TTL`` seconds."""
        known = self._log_success.get(LOG_SUCCESS)
        if known is not None:
            return known
        try:
            default = as_dict((await system_config(self._services.store, SYSTEM_CONFIG)).get("default"))
        except StorageError as error:
            log.warning("system_config/%s not read: %r", SYSTEM_CONFIG, error)
            return False
        wanted = default.get(LOG_SUCCESS) is True or str(default.get(LOG_SUCCESS)) == "true"
        self._log_success.put(LOG_SUCCESS, wanted)
        return wanted

    async def _renew(self, queue: dict[str, Any]) -> None:
        """Extend the lease when half of it is gone (Conflict: it was taken over)."""
        now = time.time()
        if float(queue.get("until") or 0) - now > self._config.webhook_lease / 2:
            return
        queue["until"] = now + self._config.webhook_lease
        await self._services.webhook_deliveries.save_queue(queue)

    async def _release(self, queue: dict[str, Any]) -> None:
        """Hand the lease back, keeping the failure count and backoff (best effort: an
        unreachable store leaves the lease to expire)."""
        if queue.get("by") != self.instance:
            return
        queue.update(by=None, until=0)
        try:
            async with asyncio.timeout(5):
                await self._services.webhook_deliveries.save_queue(queue)
        except (StorageError, TimeoutError) as error:
            log.warning("webhook lease on %s not released: %r", queue.get("hook_id"), error)

    async def _disable(self, hook: dict[str, Any]) -> None:
        """``webhooks_disabler:disable_hook``: the hook says why it stopped."""
        webhooks = self._services.webhooks
        for _attempt in range(5):
            hook.update(enabled=False, pvt_disabled_message=hooks.DISABLED_MESSAGE)
            try:
                await webhooks.save(hook)
                return
            except Conflict:
                fresh = await webhooks.fetch_any(hook["_id"])
                if fresh is None:
                    return
                hook = fresh
            except NotFound:
                return


def client_error(error: BaseException) -> str:
    """What Kazoo's http client names the failure (``econnrefused``, ``timeout``,
    ``nxdomain``), else the error's own words."""
    if isinstance(error, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return "nxdomain"
    code = error.errno if isinstance(error, OSError) else None  # aiohttp's connection errors too
    if code is not None and code in errno.errorcode:
        return errno.errorcode[code].lower()
    return str(error) or type(error).__name__
