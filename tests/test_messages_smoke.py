"""A first walk through the message endpoints (the full rule set lives in test_messages)."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from conftest import Api


async def test_message_walkthrough(api: Api, vmbox: dict[str, Any]) -> None:
    box = vmbox["id"]
    reply = await api.put(f"/vmboxes/{box}/messages", {"caller_id_name": "someone", "caller_id_number": "6001",
                                                       "folder": "new", "from": "someone@farfaraway.com"})
    assert reply.status == 201, reply.body
    message = reply.data
    assert message["from"] == "someone@farfaraway.com"
    mid = message["media_id"]
    reply = await api.call("PUT", f"/vmboxes/{box}/messages/{mid}/raw", body=b"ID3" + b"x" * 1000,
                           headers={"Content-Type": "audio/mpeg"})
    assert reply.status == 201, reply.body
    reply = await api.get(f"/vmboxes/{box}/messages/{mid}/raw", headers={"Range": "bytes=0-9"})
    assert reply.status == 206, reply.body
    assert reply.body == b"ID3xxxxxxx"
    listing = await api.get(f"/vmboxes/{box}/messages")
    assert listing.status == 200, listing.body
    assert [row["media_id"] for row in listing.data] == [mid]
    everything = await api.get("/vmboxes/messages")
    assert everything.data == [{box: listing.data[0]}]
    boxes = await api.get("/vmboxes")
    assert boxes.data[0]["messages"] == 1 and boxes.data[0]["folders"] == {"new": 1, "saved": 0}
    reply = await api.post(f"/vmboxes/{box}/messages", {"messages": [mid], "folder": "saved"})
    assert reply.data == {"succeeded": [mid]}, reply.body
    other = (await api.put("/vmboxes", {"name": "Other", "mailbox": "3001"})).data["id"]
    moved = await api.post(f"/vmboxes/{box}/messages/{mid}", {"source_id": other})
    assert moved.status == 200, moved.body
    new_id = moved.data["media_id"]
    assert new_id != mid
    assert (await api.get(f"/vmboxes/{box}/messages/{mid}")).status == 404
    audio = await api.get(f"/vmboxes/{other}/messages/{new_id}/raw")
    assert audio.body == b"ID3" + b"x" * 1000
    zipped = await api.call("POST", f"/vmboxes/{other}/messages/raw", data={"messages": [new_id]},
                            headers={"Accept": "application/zip"})
    assert zipped.status == 200, zipped.body
    archive = zipfile.ZipFile(io.BytesIO(zipped.body))
    assert [archive.read(name) for name in archive.namelist()] == [b"ID3" + b"x" * 1000]
    deleted = await api.delete(f"/vmboxes/{other}/messages", {"messages": [new_id]})
    assert deleted.data == {"succeeded": [new_id]}
    assert (await api.get(f"/vmboxes/{other}/messages")).data == []
