"""``POST /vmboxes/{B}/messages/raw``: the audio of several messages as one ZIP (E12).

Every id is checked before the first byte is sent (404 naming the first bad one); the
archive is then streamed one message at a time, so memory holds one recording, not all.
Kazoo only accepts ``application/zip`` request bodies here (which makes the endpoint
unusable); kazoo_vm reads the documented JSON body.
"""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from stream_zip import NO_COMPRESSION_32

from ..errors import BadIdentifier, validation_error
from ..http import envelope
from ..http.sending import send_body
from ..http.zip_stream import stream_zip_async
from ..kazoo import box_message
from ..storage.messages import Located
from .common import config, payload, services
from .messages import NO_MESSAGES, _box, _ids, _timezone

MAX_ZIP_MESSAGES = 1000
# The archive is a ZIP32 (no ZIP64 extensions, which some unzip tools lack): 4 GiB in all,
# headers included, whatever KAZOO_VM_MAX_ZIP_SIZE says.
ZIP32_AUDIO_LIMIT = 4_000_000_000


def audio_size(doc: dict[str, Any], unknown: int) -> int:
    """Bytes of the message's audio as its attachment stub says; ``unknown`` for audio
    a Kazoo migration linked (its size is not in the document)."""
    attachment = box_message.single_attachment(doc)
    length = attachment[1].get("length") if attachment is not None else None
    return length if isinstance(length, int) and length >= 0 else unknown


def unique_names(names: list[str]) -> list[str]:
    """Equal names get `` (1)``, `` (2)`` … before the extension, in order."""
    seen: dict[str, int] = {}
    result = []
    taken = set(names)
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        if count == 0:
            result.append(name)
            continue
        stem, dot, ext = name.rpartition(".")
        stem, ext = (stem, ext) if dot else (name, "")
        candidate = name
        while candidate in taken:
            candidate = f"{stem} ({count}).{ext}" if dot else f"{stem} ({count})"
            count += 1
        seen[name] = count
        taken.add(candidate)
        result.append(candidate)
    return result


async def download_zip(request: web.Request) -> web.StreamResponse:
    account_id, box_id = _ids(request)
    body = await payload(request)
    messages = body.data.get("messages") if isinstance(body.data, dict) else None
    if not isinstance(messages, list) or not messages or not all(isinstance(item, str) for item in messages):
        raise validation_error("messages", "required", NO_MESSAGES)
    messages = list(dict.fromkeys(messages))  # an id asked twice is one member
    if len(messages) > MAX_ZIP_MESSAGES:
        raise validation_error("messages", "maxItems", f"The list is more than {MAX_ZIP_MESSAGES} items",
                               target=MAX_ZIP_MESSAGES)
    box = await _box(request, account_id, box_id, deleted_ok=True)
    storage = services(request).messages
    found = await storage.fetch_many(account_id, messages)
    chosen: list[Located] = []
    for message_id in messages:
        located = found.get(message_id)
        if located is None or not box_message.is_in_box(located[1], box_id):
            raise BadIdentifier(message_id)
        if box_message.single_attachment(located[1]) is None and not located[1].get("pvt_attachments"):
            raise BadIdentifier(message_id)
        chosen.append(located)
    limits = config(request)
    size, most = sum(audio_size(doc, limits.max_upload_size) for _db, doc in chosen), \
        min(limits.max_zip_size, ZIP32_AUDIO_LIMIT)
    if size > most:
        raise validation_error("messages", "maxSize", f"The audio of these messages is {size} bytes, more than "
                               f"one archive holds ({most}): ask for fewer", target=most)
    tz = _timezone(request, box)
    names = unique_names([box_message.download_name(doc, (box_message.single_attachment(doc) or ("x.mp3", {}))[0],
                                                    tz) for _db, doc in chosen])

    # The first recording is read before the answer starts: a store that is down now is a
    # 503 envelope, not a broken download.
    first = await storage.audio(*chosen[0])

    async def members() -> AsyncIterator[tuple[str, datetime, int, Any, AsyncIterator[bytes]]]:
        for index, ((db, doc), name) in enumerate(zip(chosen, names, strict=True)):
            audio = first if index == 0 else await storage.audio(db, doc)
            data = audio.data if audio is not None else b""
            moment, _known = box_message.local_time(box_message.message_time(doc), "UTC")

            async def chunks(content: bytes = data) -> AsyncIterator[bytes]:
                yield content

            yield name, moment.astimezone(UTC), stat.S_IFREG | 0o644, NO_COMPRESSION_32, chunks()

    response = web.StreamResponse(headers={
        "Content-Type": "application/zip",
        "Content-Disposition": envelope.attachment_disposition(f"{request[envelope.REQUEST_ID]}.zip"),
        "X-Request-ID": request[envelope.REQUEST_ID],
    })
    envelope.add_cors(request, response)
    await response.prepare(request)
    return await send_body(request, response, stream_zip_async(members()), "ZIP")
