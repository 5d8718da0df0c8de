"""Design documents kept as files under ``couch_views/`` and installed from them.

Installation merges: the views named in a file are added or brought up to date inside
the database's design document of the same name, and views that Kazoo (or anyone) keeps
there besides ours are left alone, so a Kazoo cluster sharing the database keeps working.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..kazoo.documents import as_dict
from .couch import Couch
from .errors import Conflict, NotFound

VIEWS_DIR = Path(__file__).resolve().parent.parent.parent / "couch_views"

VMBOXES = "vmboxes"
MAILBOX_MESSAGES = "mailbox_messages"
ACCOUNTS = "accounts"
USERS = "users"
NOTIFICATIONS = "notifications"
WEBHOOKS = "webhooks"  # Kazoo's, in its ``webhooks`` database
WEBHOOK_DELIVERIES = "webhook_deliveries"
# Kazoo's ``_design/webhooks`` of the MODBs (the attempts to send a hook), not the one of
# the ``webhooks`` database: two files, one design document name.
MODB_WEBHOOKS = "modb_webhooks"
# kazoo_vm's own design doc in the MODBs (Kazoo's mailbox_messages views have no reduce).
COUNTS = "kazoo_vm_counts"
# kazoo_vm's own design doc in the account database: devices and boxes by owner (what
# Kazoo's ``attributes/owned`` gives kvm_mwi), for the MWI published beside Kazoo.
OWNED = "kazoo_vm_owned"
ALL_DESIGNS = (VMBOXES, MAILBOX_MESSAGES, ACCOUNTS, USERS, NOTIFICATIONS, COUNTS, OWNED, WEBHOOKS, WEBHOOK_DELIVERIES,
               MODB_WEBHOOKS)


@dataclass(frozen=True)
class DesignDoc:
    name: str
    views: dict[str, dict[str, str]]
    doc_id: str  # ``_design/<name>`` unless the file names another


def _source(code: Any) -> str:
    return "\n".join(code) if isinstance(code, list) else str(code)


def load_design(name: str, directory: Path = VIEWS_DIR) -> DesignDoc:
    """Read ``couch_views/<name>.json``; list-of-lines functions are joined."""
    raw = json.loads((directory / f"{name}.json").read_text())
    views = {
        view: {kind: _source(code) for kind, code in spec.items() if kind in ("map", "reduce")}
        for view, spec in raw["views"].items()
    }
    return DesignDoc(name=name, views=views, doc_id=str(raw.get("_id") or f"_design/{name}"))


class Designs:
    """The design documents of ``couch_views/``, and which databases have them current.

    The per-process memory of checked databases only saves requests: every instance
    checks a database once and brings it up to date if needed."""

    def __init__(self, couch: Couch) -> None:
        self._couch = couch
        self._docs = {name: load_design(name) for name in ALL_DESIGNS}
        self._current: set[tuple[str, str]] = set()

    def forget(self, db: str) -> None:
        self._current = {entry for entry in self._current if entry[0] != db}

    async def ensure(self, db: str, name: str) -> None:
        """Make ``_design/<name>`` in ``db`` hold our views (raises NotFound if ``db``
        does not exist)."""
        if (db, name) in self._current:
            return
        design = self._docs[name]
        for _attempt in range(5):
            try:
                stored = await self._couch.get_doc(db, design.doc_id)
            except NotFound:
                if not await self._couch.db_exists(db):
                    raise
                stored = {"_id": design.doc_id, "language": "javascript", "views": {}}
            views = as_dict(stored.get("views"))
            changed = False
            for view, spec in design.views.items():
                if views.get(view) != spec:
                    views[view] = dict(spec)
                    changed = True
            if not changed:
                break
            stored["views"] = views
            stored["language"] = "javascript"
            try:
                await self._couch.put_doc(db, stored)
                break
            except Conflict:
                continue
        self._current.add((db, name))
