"""Which of kazoo_vm's writes become Kazoo document events, and how.

Kazoo's data layer publishes every save and delete (``kzs_publish``) except design
documents and the types of ``change_notice_exclude_types``. kazoo_vm publishes the same
for the databases Kazoo shares with it (account databases, MODBs, ``accounts``), and
nothing for its own bookkeeping: the databases ``kazoo_vm_moves`` and
``kazoo_vm_notifications`` and its documents in ``system_config`` (signing secret,
replication targets) are no Kazoo data and no Kazoo cache holds them.
"""

from __future__ import annotations

from ..events import DocChanged
from ..kazoo import naming
from .kapi import Origin, Outgoing, doc_event

# kazoo_data's default ``change_notice_exclude_types``.
EXCLUDED_TYPES = frozenset({"cdr", "ledger", "audit_log", "login_attempt", "pivot_debug", "notify_smtp_log"})
# Saved by Kazoo with ``{publish_change_notice, false}`` (webhooks_util:save_attempt).
UNANNOUNCED_TYPES = frozenset({"webhook_attempt"})


def is_published(event: DocChanged) -> bool:
    if event.doc_id.startswith("_design/") or event.doc_type in EXCLUDED_TYPES | UNANNOUNCED_TYPES:
        return False
    return event.account_id is not None or event.database == naming.ACCOUNTS_DB


def outgoing(origin: Origin, event: DocChanged) -> Outgoing:
    """The ``doc_created``/``doc_edited``/``doc_deleted`` message of a write.
    ``Account-ID`` is Kazoo's ``doc_acct_id``: the account of the database, or the
    account document's own id in ``accounts``."""
    account_id = event.account_id
    if account_id is None and event.doc_type == "account" and naming.is_account_id(event.doc_id):
        account_id = event.doc_id
    return doc_event(origin, event.action, naming.encoded_db(event.database), event.doc_id, event.doc_type,
                     rev=event.rev, account_id=account_id, soft_deleted=event.soft_deleted,
                     created=event.created, modified=event.modified)
