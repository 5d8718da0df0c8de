"""The MWI messages of ``kvm_mwi:notify_vmbox/2`` for boxes whose counts may have changed.

Per box, in Kazoo's order: one ``mwi_unsolicited_update`` per device of the box's owner
(counts summed over all the owner's boxes), then the box's ``mwi_update`` (its own
counts). Counts are the ``new`` and ``saved`` messages inside the retention window, read
when the messages are built, i.e. after the change (and, after a broker outage, as they
stand when it is back).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..kazoo.documents import as_dict, gregorian_now
from ..services import Services
from ..storage.accounts import system_config
from ..storage.errors import NotFound
from ..storage.messages import window
from .kapi import Origin, Outgoing, mwi_unsolicited_update, mwi_update

log = logging.getLogger(__name__)

CONFIG_CATEGORY = "callflow"
UNSOLICITED_KEY = "mwi_send_unsolicited_updates"
PREFIX_KEY = "dialog_subscribed_mwi_prefix"


def is_true(value: Any, default: bool = True) -> bool:
    """``kz_term:is_true/1`` of a stored value, ``default`` when it is missing."""
    if value is None:
        return default
    return value is True or value == "true"


def device_owner(device: dict[str, Any]) -> str | None:
    """``get_endpoint_owner/1``: the one hotdesk user, else ``owner_id`` (none when
    several users are hot-desked)."""
    users = list(as_dict(as_dict(device.get("hotdesk")).get("users")))
    if len(users) == 1:
        return str(users[0])
    if users:
        return None
    owner = device.get("owner_id")
    return owner if isinstance(owner, str) and owner else None


def unsolicited_target(device: dict[str, Any], account_realm: str) -> tuple[str, str] | None:
    """(SIP username, realm) of a device that gets unsolicited MWI: SIP method
    ``password``, a username, a realm (its own, else the account's), an owner and
    ``mwi_unsolicited_updates`` not off."""
    sip = as_dict(device.get("sip"))
    username, realm = sip.get("username"), sip.get("realm") or account_realm
    if sip.get("method", "password") != "password" or not isinstance(username, str) or not username:
        return None
    if not isinstance(realm, str) or not realm or device_owner(device) is None:
        return None
    if not is_true(device.get("mwi_unsolicited_updates")):
        return None
    return username, realm


@dataclass
class _Account:
    realm: str
    counts: dict[str, dict[str, int]]
    unsolicited: bool
    prefix: str | None

    def of_box(self, box_id: str) -> tuple[int, int]:
        folders = self.counts.get(box_id, {})
        return folders.get("new", 0), folders.get("saved", 0)


class Mwi:
    def __init__(self, services: Services, origin: Origin, retention_seconds: int) -> None:
        self._services = services
        self._origin = origin
        self._retention = retention_seconds

    async def messages(self, account_id: str, box_ids: list[str]) -> list[Outgoing]:
        """What Kazoo would publish for these boxes of one account, now. Boxes that
        cannot be told (gone for good, no ``mailbox``, account without realm) are
        skipped, as kvm_mwi fails on them."""
        try:
            account = await self._account(account_id)
        except NotFound:
            return []
        if account is None:
            log.warning("MWI: account %s has no realm, nothing published", account_id)
            return []
        out: list[Outgoing] = []
        for box_id in box_ids:
            try:
                box = await self._services.vmboxes.fetch(account_id, box_id, deleted_ok=True)
            except NotFound:
                log.info("MWI: box %s/%s is gone, nothing published", account_id, box_id)
                continue
            mailbox = box.get("mailbox")
            if mailbox is None or mailbox == "":
                continue
            owner_id = box.get("owner_id")
            if isinstance(owner_id, str) and owner_id and account.unsolicited:
                out.extend(await self._owner_updates(account_id, account, owner_id))
            new, saved = account.of_box(box_id)
            extended = f"{account.prefix}{mailbox}" if account.prefix else None
            out.append(mwi_update(self._origin, str(mailbox), account.realm, new, saved,
                                  extended_presence_id=extended))
        return out

    async def _account(self, account_id: str) -> _Account | None:
        services = self._services
        realm = (await services.accounts.fetch(account_id, cached=True)).get("realm")
        if not isinstance(realm, str) or not realm:
            return None
        counts = await services.messages.count_per_box(account_id, *window(gregorian_now(), self._retention))
        system = as_dict((await system_config(services.store, CONFIG_CATEGORY)).get("default"))
        own = await services.accounts.config(account_id, CONFIG_CATEGORY)
        unsolicited = is_true(system.get(UNSOLICITED_KEY)) and is_true(own.get(UNSOLICITED_KEY))
        prefix = own.get(PREFIX_KEY) or system.get(PREFIX_KEY)
        return _Account(realm, counts, unsolicited, prefix if isinstance(prefix, str) and prefix else None)

    async def _owner_updates(self, account_id: str, account: _Account, owner_id: str) -> list[Outgoing]:
        users = self._services.users
        devices = await users.owned(account_id, owner_id, "device")
        targets = [target for device in devices if (target := unsolicited_target(device, account.realm))]
        if not targets:
            return []
        new = saved = 0
        for box in await users.owned(account_id, owner_id, "vmbox"):
            box_new, box_saved = account.of_box(str(box["_id"]))
            new, saved = new + box_new, saved + box_saved
        return [mwi_unsolicited_update(self._origin, username, realm, new, saved) for username, realm in targets]
