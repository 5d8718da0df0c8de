"""A mailbox number belongs to one box, also when many clients race for it."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from conftest import Api, assert_error

CLIENTS = 16
ROUNDS = int(os.environ.get("KAZOO_VM_RACE_ROUNDS") or 5)  # a long run: KAZOO_VM_RACE_ROUNDS=100


def unique_error(reply: Any) -> bool:
    if reply.status != 400:
        return False
    return "unique" in (reply.json.get("data", {}).get("mailbox") or {})


async def test_concurrent_creates_with_one_mailbox_make_exactly_one_box(api: Api) -> None:
    for round_ in range(ROUNDS):
        mailbox = str(8800 + round_)
        replies = await asyncio.gather(*(api.put("/vmboxes", {"name": f"Racer {i}", "mailbox": mailbox})
                                         for i in range(CLIENTS)))
        statuses = sorted(reply.status for reply in replies)
        assert statuses.count(201) == 1, (round_, statuses)
        assert all(reply.status == 201 or unique_error(reply) for reply in replies), [r.body for r in replies]
        listed = (await api.get("/vmboxes", params={"paginate": "false"})).data
        assert [box["mailbox"] for box in listed].count(mailbox) == 1


async def test_concurrent_patches_to_one_mailbox_give_it_to_exactly_one_box(api: Api) -> None:
    boxes = [(await api.put("/vmboxes", {"name": f"Box {i}", "mailbox": str(8900 + i)})).data["id"]
             for i in range(CLIENTS)]
    replies = await asyncio.gather(*(api.patch(f"/vmboxes/{box_id}", {"mailbox": "8999"}) for box_id in boxes))
    statuses = sorted(reply.status for reply in replies)
    assert statuses.count(200) == 1, statuses
    assert all(reply.status == 200 or unique_error(reply) for reply in replies)
    listed = (await api.get("/vmboxes", params={"paginate": "false"})).data
    assert [box["mailbox"] for box in listed].count("8999") == 1


async def test_a_number_given_up_by_a_change_is_free_at_once(api: Api) -> None:
    first = (await api.put("/vmboxes", {"name": "First", "mailbox": "8700"})).data
    assert (await api.patch(f"/vmboxes/{first['id']}", {"mailbox": "8701"})).status == 200
    reply = await api.put("/vmboxes", {"name": "Second", "mailbox": "8700"})
    assert reply.status == 201, reply.body


async def test_a_number_of_a_deleted_box_is_free_at_once(api: Api) -> None:
    first = (await api.put("/vmboxes", {"name": "First", "mailbox": "8600"})).data
    assert (await api.delete(f"/vmboxes/{first['id']}")).status == 200
    reply = await api.put("/vmboxes", {"name": "Second", "mailbox": "8600"})
    assert reply.status == 201, reply.body


async def test_a_number_written_the_same_way_twice_is_refused_with_kazoos_error(api: Api) -> None:
    assert (await api.put("/vmboxes", {"name": "First", "mailbox": "8500"})).status == 201
    data = assert_error(await api.put("/vmboxes", {"name": "Second", "mailbox": "08500"}), 400, "validation error")
    assert data["mailbox"]["unique"]["message"] == "Invalid mailbox number or already exists"
