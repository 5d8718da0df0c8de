"""The storage objects of one application, built over one CouchDB connection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .events import DocAction, DocChanged, Events
from .kazoo import naming
from .kazoo.documents import as_int
from .storage.accounts import Accounts, Users
from .storage.couch import Couch
from .storage.legacy import Legacy
from .storage.messages import Messages
from .storage.moves import Moves
from .storage.notifications import Notifications
from .storage.replication import Replication
from .storage.store import Store
from .storage.vmboxes import Vmboxes
from .storage.webhook_attempts import WebhookAttempts
from .storage.webhooks import WebhookDeliveries, Webhooks


@dataclass
class Services:
    store: Store
    accounts: Accounts
    users: Users
    vmboxes: Vmboxes
    messages: Messages
    moves: Moves
    legacy: Legacy
    notifications: Notifications
    replication: Replication
    webhooks: Webhooks
    webhook_deliveries: WebhookDeliveries
    webhook_attempts: WebhookAttempts
    events: Events = field(default_factory=Events)

    def __post_init__(self) -> None:
        self.store.couch.on_write = self._doc_written

    def _doc_written(self, db: str, doc: dict[str, Any], created: bool) -> None:
        """Every document write CouchDB took becomes a :class:`DocChanged` event."""
        soft_deleted = bool(doc.get("pvt_deleted"))
        action: DocAction = "deleted" if soft_deleted or doc.get("_deleted") else "created" if created else "edited"
        pvt_type = doc.get("pvt_type")
        self.events.publish(DocChanged(
            action=action, account_id=naming.account_id_of_db(db), database=db, doc_id=str(doc.get("_id")),
            doc_type=pvt_type if isinstance(pvt_type, str) else None, rev=str(doc.get("_rev")),
            soft_deleted=soft_deleted, created=as_int(doc.get("pvt_created")),
            modified=as_int(doc.get("pvt_modified"))))

    @classmethod
    def connect(cls, couch_url: str, *, timeout: float, connect_timeout: float = 3.0,
                cache_ttl: float = 0.0) -> Services:
        """``cache_ttl``: seconds this process may serve what it read from CouchDB (0, the
        default for commands and direct storage access: always read)."""
        store = Store(Couch(couch_url, timeout=timeout, connect_timeout=connect_timeout), cache_ttl=cache_ttl)
        messages = Messages(store)
        return cls(store=store, accounts=Accounts(store, cache_ttl=cache_ttl), users=Users(store),
                   vmboxes=Vmboxes(store, cache_ttl=cache_ttl), messages=messages, moves=Moves(store, messages),
                   legacy=Legacy(store, messages, cache_ttl=cache_ttl), notifications=Notifications(store),
                   # CouchDB's replicator runs on the nodes: any one node's URL names this
                   # cluster for it (KAZOO_VM_COUCH_URL may list several)
                   replication=Replication(store, store.couch.endpoint.with_credentials()),
                   webhooks=Webhooks(store, cache_ttl=cache_ttl), webhook_deliveries=WebhookDeliveries(store),
                   webhook_attempts=WebhookAttempts(store))

    async def close(self) -> None:
        await self.store.close()
