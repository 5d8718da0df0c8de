"""The link to Kazoo's RabbitMQ: one robust connection, an outbox, a background task.

Requests never wait on the broker: the event listener only notes what is to publish
and returns. The task publishes it, in order:

* document events, in the order of the writes, from a bounded queue: while the broker
  is away at most ``DOC_BACKLOG`` wait, then the oldest are dropped (and counted in a
  log line once the broker is back);
* MWI, kept as a set of boxes whose state changed (the same box twice is one entry):
  the messages are built when they go out, so after an outage each box changed
  meanwhile is published once, with its counts as they are then.

A failed publish is retried once the connection is back (aio-pika reconnects by
itself). Closing waits at most ``CLOSE_TIMEOUT`` seconds for what is pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection
from yarl import URL

from ..events import BoxesChanged, DocChanged, Event
from ..services import Services
from . import doc_events, kapi
from .listener import Listener
from .mwi import Mwi

log = logging.getLogger(__name__)

DOC_BACKLOG = 10_000
PUBLISH_TIMEOUT = 5.0
RETRY_PAUSE = 1.0
RECONNECT_WAIT = 30.0
CLOSE_TIMEOUT = 2.0
# aio-pika's connection options, unless the URL sets them: wait for a broker that is
# not there yet (instead of failing at startup), and try again every second.
CONNECTION_DEFAULTS = {"fail_fast": "0", "reconnect_interval": "1"}


def connection_url(url: str) -> URL:
    parsed = URL(url)
    return parsed.update_query({key: value for key, value in CONNECTION_DEFAULTS.items()
                                if key not in parsed.query})


class Publisher:
    def __init__(self, url: str, services: Services, *, retention_seconds: int,
                 origin: kapi.Origin | None = None) -> None:
        self.origin = origin or kapi.Origin.of_this_process()
        self._url = connection_url(url)
        self._services = services
        self._mwi = Mwi(services, self.origin, retention_seconds)
        self._docs: deque[kapi.Outgoing] = deque()
        self._dropped = 0
        self._boxes: dict[tuple[str, str], None] = {}  # an ordered set
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self.ready = asyncio.Event()  # set once connected, exchanges declared and listening

    # -- the event listener (synchronous: notes and returns) ---------------------

    def hear(self, event: Event) -> None:
        if isinstance(event, DocChanged):
            if not doc_events.is_published(event):
                return
            if len(self._docs) >= DOC_BACKLOG:
                self._docs.popleft()
                self._dropped += 1
            self._docs.append(doc_events.outgoing(self.origin, event))
        elif isinstance(event, BoxesChanged):
            for box_id in event.box_ids:
                self._boxes[(event.account_id, box_id)] = None
        else:
            return  # voicemail notifications: see docs/beside-kazoo.rst
        self._idle.clear()
        self._wake.set()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self._services.events.subscribe(self.hear)
        self._task = asyncio.create_task(self._run(), name="amqp-publisher")

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stop hearing, give what is pending ``timeout`` seconds, then let go."""
        self._services.events.unsubscribe(self.hear)
        if self._channel is not None and not self._idle.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._connection.close(), timeout)
        if self._docs or self._boxes:
            log.warning("AMQP: closed with %d document events and the MWI of %d boxes not published",
                        len(self._docs), len(self._boxes))

    @property
    def pending(self) -> tuple[int, int]:
        """(document events, boxes) waiting to be published."""
        return len(self._docs), len(self._boxes)

    async def _run(self) -> None:
        channel = await self._connect()
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._drain()
            except Exception as error:  # the broker (or the store) is away: try again
                if not self._failing:
                    log.warning("AMQP: publishing stopped (%r); retrying until it works", error)
                self._failing = True
                self._wake.set()
                with contextlib.suppress(TimeoutError):  # asyncio.timeout: a cancel is never swallowed
                    async with asyncio.timeout(RECONNECT_WAIT):
                        await channel.ready()
                await asyncio.sleep(RETRY_PAUSE)
                continue
            if self._failing:
                self._failing = False
                log.warning("AMQP: publishing again%s", f"; {self._dropped} document events were dropped"
                            if self._dropped else "")
                self._dropped = 0
            if not self._docs and not self._boxes:
                self._idle.set()

    async def _connect(self) -> AbstractRobustChannel:
        """Connect (waiting for the broker as long as it takes), declare Kazoo's
        exchanges as Kazoo does and start listening to Kazoo's document events."""
        connection = aio_pika.RobustConnection(self._url)
        self._connection = connection
        await connection.connect(timeout=PUBLISH_TIMEOUT)
        while True:
            try:
                channel = await connection.channel()
                for name in (kapi.PRESENCE, kapi.CONFIGURATION):
                    self._exchanges[name] = await channel.declare_exchange(
                        name, aio_pika.ExchangeType.TOPIC, durable=False, auto_delete=False)
                await Listener(self._services, self.origin).listen(await connection.channel())
            except Exception as error:
                log.warning("AMQP: could not set up the channels (%r); trying again", error)
                await asyncio.sleep(RETRY_PAUSE)
                continue
            self._channel = channel
            self.ready.set()
            log.info("AMQP: connected to %s", self._url.with_password(None).with_query(None))
            return channel

    async def _drain(self) -> None:
        while self._docs or self._boxes:
            while self._docs:
                message = self._docs[0]
                await self._publish(message)
                if self._docs and self._docs[0] is message:
                    self._docs.popleft()
            if self._boxes:
                await self._publish_boxes()

    async def _publish_boxes(self) -> None:
        """The MWI of every box noted so far, one account at a time; a box whose
        messages did not all go out is noted again."""
        by_account: dict[str, list[str]] = {}
        for account_id, box_id in self._boxes:
            by_account.setdefault(account_id, []).append(box_id)
        self._boxes.clear()
        accounts = list(by_account.items())
        for index, (account_id, box_ids) in enumerate(accounts):
            try:
                for message in await self._mwi.messages(account_id, box_ids):
                    await self._publish(message)
            except BaseException:
                for left_account, left_boxes in accounts[index:]:
                    for box_id in left_boxes:
                        self._boxes.setdefault((left_account, box_id), None)
                raise

    async def _publish(self, message: kapi.Outgoing) -> None:
        body = json.dumps(message.body, separators=(",", ":")).encode()
        await self._exchanges[message.exchange].publish(
            aio_pika.Message(body, content_type=kapi.CONTENT_TYPE), message.routing_key,
            mandatory=False, timeout=PUBLISH_TIMEOUT)
