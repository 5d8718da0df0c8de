"""What kazoo_vm tells the world about its changes, in Kazoo's terms.

The storage layer and the handlers *publish* events here; whoever must hear about them
(the AMQP publisher beside a Kazoo, webhooks) *subscribes*. Publishing never waits and
never fails the request: a listener is called at once, must only take note of the event
(queue it) and return, and an error of a listener is logged and forgotten.

The three kinds mirror what Kazoo 4.3 does around a voicemail change:

* :class:`DocChanged` — a document written to CouchDB (Kazoo's data layer publishes
  ``doc_created`` / ``doc_edited`` / ``doc_deleted`` for each);
* :class:`BoxesChanged` — boxes whose message-waiting state crossbar would send again
  after this request (``kvm_mwi:notify_vmbox`` per box);
* :class:`VoicemailNotice` — a voicemail notification (``voicemail_new`` when a message
  with audio arrives, ``voicemail_saved``, ``voicemail_deleted`` when the API deletes one).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

DocAction = Literal["created", "edited", "deleted"]
NoticeName = Literal["voicemail_new", "voicemail_saved", "voicemail_deleted"]
CROSSBAR_ACTION = "crossbar_action"  # Kazoo's ``Reason`` of a voicemail_deleted sent for an API delete


@dataclass(frozen=True)
class DocChanged:
    """A document kazoo_vm wrote, once CouchDB took the write.

    ``action`` follows Kazoo's rule (``kzs_publish``): ``deleted`` when the document as
    saved is soft-deleted (``pvt_deleted``) or deleted, ``created`` when it was saved
    without a revision, ``edited`` otherwise."""

    action: DocAction
    account_id: str | None  # None for a database of no account (``accounts``, ``system_config``)
    database: str  # the name as CouchDB knows it, unencoded: ``account/xx/yy/rest[-YYYYMM]``
    doc_id: str
    doc_type: str | None  # ``pvt_type``
    rev: str  # the revision written
    soft_deleted: bool
    created: int | None  # ``pvt_created`` (gregorian seconds)
    modified: int | None  # ``pvt_modified``


@dataclass(frozen=True)
class BoxesChanged:
    """The message counts of these boxes may have changed: crossbar would send each box's
    MWI now. Box ids in the order the request touched them, each once."""

    account_id: str
    box_ids: tuple[str, ...]


@dataclass(frozen=True)
class VoicemailNotice:
    """A voicemail notification about one message of one box."""

    name: NoticeName
    account_id: str
    box: dict[str, Any]  # the box document
    message: dict[str, Any]  # the message document as stored (``metadata`` holds the fields)
    reason: str | None = None  # ``voicemail_deleted``: ``crossbar_action`` for API deletes


Event = DocChanged | BoxesChanged | VoicemailNotice
Listener = Callable[[Event], None]


class Events:
    """The fan-out from publishers to listeners of one application."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def publish(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a listener's fault never fails the change that was made
                log.exception("event listener failed on %s", type(event).__name__)
