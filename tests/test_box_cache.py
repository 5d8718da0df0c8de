"""An instance's own writes count at once, even for reads in flight.

Message creates read their box from a short per-instance cache (``KAZOO_VM_CACHE_TTL``).
A read of the box that was sent before a ``DELETE`` or ``PATCH`` and finishes after it
must not put the old box back into that cache. Likewise listings and counts remember
monthly databases found missing: a probe answered before this instance created the
month's database must not hide it afterwards.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

from aiohttp.test_utils import TestClient
from conftest import Api, Reply, login, make_account

from kazoo_vm.kazoo.documents import GREGORIAN_UNIX_OFFSET
from kazoo_vm.services import Services

ROUNDS = int(os.environ.get("KAZOO_VM_RACE_ROUNDS") or 30)  # a long run: KAZOO_VM_RACE_ROUNDS=100
READERS = 32


async def while_read(api: Api, path: str, change: Awaitable[Reply]) -> Reply:
    """``change`` sent while ``READERS`` clients keep reading ``path``; returns its reply
    once every read sent before it ended has ended too."""
    done = asyncio.Event()

    async def reader() -> None:
        while not done.is_set():
            await api.get(path)

    readers = [asyncio.create_task(reader()) for _ in range(READERS)]
    await asyncio.sleep(0.02)
    try:
        reply = await change
    finally:
        done.set()
        await asyncio.gather(*readers)
    return reply


async def test_a_deleted_box_takes_no_message_though_reads_of_it_were_in_flight(api: Api) -> None:
    accepted = []
    for round_ in range(ROUNDS):
        box = (await api.put("/vmboxes", {"name": f"Going {round_}", "mailbox": str(5000 + round_)})).data
        path = f"/vmboxes/{box['id']}"
        deleted = await while_read(api, path, api.delete(path))
        assert deleted.status == 200, deleted.body
        created = await api.put(f"{path}/messages", {"caller_id_number": "6001"})
        if created.status != 404:
            accepted.append((round_, created.status))
    assert accepted == [], f"messages taken by a deleted box (round, status): {accepted}"


async def test_a_message_create_sees_the_box_as_patched_though_reads_of_it_were_in_flight(api: Api) -> None:
    stale = []
    for round_ in range(ROUNDS):
        box = (await api.put("/vmboxes", {"name": f"Changing {round_}", "mailbox": str(6000 + round_)})).data
        path = f"/vmboxes/{box['id']}"
        patched = await while_read(api, path, api.patch(path, {"mailbox": str(7000 + round_)}))
        assert patched.status == 200, patched.body
        created = await api.put(f"{path}/messages", {"caller_id_number": "6001"})
        assert created.status == 201, created.body
        if created.data["to_user"] != str(7000 + round_):
            stale.append((round_, created.data["to_user"]))
    assert stale == [], f"messages addressed to the box's mailbox before the PATCH (round, to_user): {stale}"


def months_ago(count: int) -> int:
    """A gregorian time mid-month, ``count`` months before this one."""
    now = datetime.now(UTC)
    year, month = divmod(now.year * 12 + now.month - 1 - count, 12)
    return int(datetime(year, month + 1, 10, 12, tzinfo=UTC).timestamp()) + GREGORIAN_UNIX_OFFSET


async def test_a_message_in_a_month_without_database_counts_at_once_though_counts_were_in_flight(
        services: Services, client: TestClient[Any, Any]) -> None:
    missed = []
    for account_round in range(15):
        account = await make_account(services, name=f"Months {account_round}")
        api = Api(client, account["_id"], await login(client, account["pvt_api_key"]))
        box = (await api.put("/vmboxes", {"name": "Back-dated", "mailbox": "8100"})).data
        for months in (1, 2):  # each creates its month's database (inside the retention window)
            created = await while_read(api, "/vmboxes", api.put(f"/vmboxes/{box['id']}/messages", {
                "caller_id_number": "6001", "timestamp": months_ago(months)}))
            assert created.status == 201, created.body
            counted = (await api.get("/vmboxes")).data[0]["messages"]
            if counted != months:
                missed.append((account_round, months, counted))
    assert missed == [], f"messages left out of the box's count (account, created so far, counted): {missed}"
