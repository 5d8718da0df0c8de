"""``/v2/accounts/{A}/vmboxes`` and ``/vmboxes/{B}`` (Kazoo E1–E6)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from .. import appkeys
from ..errors import BadIdentifier, DatastoreConflict, ValidationError, ValidationErrors
from ..events import CROSSBAR_ACTION, BoxesChanged, VoicemailNotice
from ..http import envelope
from ..http.listing import listing_params, page_envelope
from ..http.payload import Payload
from ..http.validation import add_error
from ..kazoo import filters, naming
from ..kazoo.documents import as_int, gregorian_now, new_id, private_fields, public_fields, stamp, to_response
from ..storage.errors import Conflict, NotFound
from ..storage.messages import window
from ..storage.vmboxes import mailbox_number
from .common import author, config, location, payload, services

SCHEMA = "vmboxes"
# Listing and summary keys a client may send back with a box; never stored.
READ_ONLY_KEYS = ("messages", "folders")
MIGRATE_MESSAGE = "Please migrate your voicemail box messages to MODB"
NOTIFY_WARNING = "214 Transformation applied: attribute notify_email_address replaced"
SAVE_RETRIES = 3
UNIQUE = {"message": "Invalid mailbox number or already exists"}


def box_id_of(request: web.Request) -> str:
    box_id = request.match_info["vmbox_id"]
    if not naming.is_vmbox_id(box_id):
        raise BadIdentifier(box_id)
    return box_id


def request_box(body: Payload) -> dict[str, Any]:
    """The client's box fields: public keys only, read-only listing keys dropped."""
    if not isinstance(body.data, dict):
        raise ValidationError({"data": {"type": {"message": "Value did not match type(s): object",
                                                 "target": "object", "value": body.data}}})
    return {key: value for key, value in public_fields(body.data).items() if key not in READ_ONLY_KEYS}


async def validate_box(request: web.Request, account_id: str, data: dict[str, Any],
                       box_id: str | None) -> dict[str, Any]:
    """Schema and mailbox uniqueness, every error at once; returns the box fields
    with defaults (without ``id``)."""
    fields = {key: value for key, value in data.items() if key != "id"}
    validated, errors = request.app[appkeys.SCHEMAS].validate(SCHEMA, fields)
    number = mailbox_number(validated.get("mailbox"))
    if number is not None:
        owners = await services(request).vmboxes.ids_with_mailbox(account_id, number)
        if len(owners) > 1 or (len(owners) == 1 and owners[0] != box_id):
            add_error(errors, "mailbox", "unique", dict(UNIQUE))
    if errors:
        raise ValidationError(errors)
    return dict(validated)


def _headers(box: dict[str, Any]) -> dict[str, str]:
    if box.get("notify_email_addresses"):
        return {"Warning": NOTIFY_WARNING}
    return {}


def _response_extra(stored: dict[str, Any]) -> dict[str, Any] | None:
    if isinstance(stored.get("messages"), list) and stored["messages"]:
        return {"message": MIGRATE_MESSAGE}
    return None


async def list_vmboxes(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    body = await payload(request)
    settings = config(request)
    params = listing_params(request.query, body, settings.page_size)
    keep = filters.build(request.query)
    storage = services(request)
    page = await storage.vmboxes.listing(account_id, page_size=params.page_size, start=params.start,
                                         descending=params.descending, keep_doc=keep)
    counts = await storage.messages.count_per_box(account_id, *window(gregorian_now(), settings.retention_seconds))
    data = []
    for row in reversed(page.rows):
        summary = dict(row["value"]) if isinstance(row.get("value"), dict) else {"id": row["id"]}
        legacy = as_int(summary.get("messages")) or 0
        folders = counts.get(str(summary.get("id", row["id"])))
        if folders is not None:
            summary["messages"] = legacy + folders["new"] + folders["saved"]
            summary["folders"] = {"new": folders["new"], "saved": folders["saved"]}
        else:
            summary["messages"] = legacy
        summary.setdefault("flags", [])
        data.append(summary)
    extra = page_envelope(params, len(data), page.next_start, always_start_key=False)
    return envelope.success(request, data, revision=envelope.list_revision(data), extra=extra)


async def create_vmbox(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    data = request_box(await payload(request))
    chosen_id = data.get("id")
    errors: ValidationErrors = {}
    if chosen_id is not None and (not isinstance(chosen_id, str) or not naming.is_vmbox_id(chosen_id)):
        add_error(errors, "id", "pattern", {"message": f"Failed to match pattern '{naming.VMBOX_ID_PATTERN}'",
                                            "target": naming.VMBOX_ID_PATTERN, "value": chosen_id})
    try:
        box = await validate_box(request, account_id, data, None)
    except ValidationError as failure:
        failure.data.update(errors)
        raise
    if errors:
        raise ValidationError(errors)
    box["_id"] = chosen_id if isinstance(chosen_id, str) else new_id()
    stamp(box, account_id=account_id, account_db=naming.encoded_db(naming.account_db(account_id)),
          pvt_type="vmbox", author=author(request), now=gregorian_now())
    async with _mailbox_claimed(request, account_id, box["_id"], box, None):
        try:
            await services(request).vmboxes.save(account_id, box)
        except Conflict:
            raise DatastoreConflict() from None
    headers = {"Location": location(request, box["_id"]), **_headers(box)}
    return envelope.success(request, to_response(box, drop=READ_ONLY_KEYS), status=201,
                            revision=box["_rev"], headers=headers)


async def _load(request: web.Request, account_id: str, box_id: str) -> dict[str, Any]:
    try:
        return await services(request).vmboxes.fetch(account_id, box_id)
    except NotFound:
        raise BadIdentifier(box_id) from None


async def get_vmbox(request: web.Request) -> web.Response:
    account_id, box_id = request.match_info["account_id"], box_id_of(request)
    box = await _load(request, account_id, box_id)
    return envelope.success(request, to_response(box, drop=READ_ONLY_KEYS), revision=box["_rev"])


async def _replace(request: web.Request, account_id: str, box_id: str, new_fields: dict[str, Any],
                   stored: dict[str, Any]) -> dict[str, Any]:
    """The stored box's private fields (and legacy messages) plus ``new_fields``, saved."""
    box = {**private_fields(stored), **new_fields}
    if isinstance(stored.get("messages"), list) and stored["messages"]:
        box["messages"] = stored["messages"]
    box["_id"] = box_id
    stamp(box, account_id=account_id, account_db=naming.encoded_db(naming.account_db(account_id)),
          pvt_type="vmbox", author=author(request), now=gregorian_now())
    async with _mailbox_claimed(request, account_id, box_id, box, stored):
        await services(request).vmboxes.save(account_id, box)
    return box


@asynccontextmanager
async def _mailbox_claimed(request: web.Request, account_id: str, box_id: str, box: dict[str, Any],
                           stored: dict[str, Any] | None) -> AsyncIterator[None]:
    """Around the save of ``box`` (``stored``: as it was, None for a new box): its
    mailbox number is claimed first (400 ``unique`` when another box holds it, whatever
    instance or node that box was written through), released again if the save fails;
    the number it had before is released once the save is in."""
    vmboxes = services(request).vmboxes
    number = mailbox_number(box.get("mailbox"))
    before = None if stored is None else mailbox_number(stored.get("mailbox"))
    claimed = number is not None and number != before
    if claimed and number is not None and not await vmboxes.claim_mailbox(account_id, number, box_id,
                                                                        gregorian_now()):
        raise ValidationError({"mailbox": {"unique": dict(UNIQUE)}})
    try:
        yield
    except BaseException:
        if claimed and number is not None:
            await vmboxes.release_mailbox(account_id, number, box_id)
        raise
    if before is not None and before != number:
        await vmboxes.release_mailbox(account_id, before, box_id)


async def update_vmbox(request: web.Request) -> web.Response:
    """POST: a full replacement of the public fields (validation before loading)."""
    account_id, box_id = request.match_info["account_id"], box_id_of(request)
    data = request_box(await payload(request))
    fields = await validate_box(request, account_id, data, box_id)
    for _attempt in range(SAVE_RETRIES):
        stored = await _load(request, account_id, box_id)
        try:
            box = await _replace(request, account_id, box_id, fields, stored)
        except Conflict:
            continue
        return envelope.success(request, to_response(box, drop=READ_ONLY_KEYS), revision=box["_rev"],
                                extra=_response_extra(stored), headers=_headers(box))
    raise DatastoreConflict()


async def patch_vmbox(request: web.Request) -> web.Response:
    """PATCH: request fields merged over the stored ones (``null`` removes a key)."""
    account_id, box_id = request.match_info["account_id"], box_id_of(request)
    body = await payload(request)
    stored = await _load(request, account_id, box_id)
    changes = request_box(body)
    changes.pop("id", None)
    for _attempt in range(SAVE_RETRIES):
        merged = {key: value for key, value in public_fields(stored).items() if key not in READ_ONLY_KEYS}
        merged.update(changes)
        merged = {key: value for key, value in merged.items() if value is not None}
        fields = await validate_box(request, account_id, merged, box_id)
        try:
            box = await _replace(request, account_id, box_id, fields, stored)
        except Conflict:
            stored = await _load(request, account_id, box_id)
            continue
        return envelope.success(request, to_response(box, drop=READ_ONLY_KEYS), revision=box["_rev"],
                                extra=_response_extra(stored), headers=_headers(box))
    raise DatastoreConflict()


async def delete_vmbox(request: web.Request) -> web.Response:
    """Soft-deletes the box's messages in the retention window, then the box (or
    removes it for real with ``should_soft_delete=false``)."""
    account_id, box_id = request.match_info["account_id"], box_id_of(request)
    body = await payload(request)
    storage = services(request)
    now = gregorian_now()
    stored = await _load(request, account_id, box_id)
    revision = stored["_rev"]
    by_db = await storage.messages.ids_of_box(account_id, box_id, *window(now, config(request).retention_seconds))
    deleted: list[dict[str, Any]] = []
    await storage.messages.soft_delete(by_db, now, deleted=deleted)
    for message in deleted:
        storage.events.publish(VoicemailNotice("voicemail_deleted", account_id, stored, message,
                                               reason=CROSSBAR_ACTION))
    soft = str(body.setting(request, "should_soft_delete")).lower() != "false"
    for _attempt in range(SAVE_RETRIES):
        try:
            if soft:
                stored["pvt_deleted"] = True
                stamp(stored, account_id=account_id, account_db=naming.encoded_db(naming.account_db(account_id)),
                      pvt_type="vmbox", author=author(request), now=now)
                await storage.vmboxes.save(account_id, stored)
            else:
                await storage.vmboxes.delete(account_id, stored)
            break
        except Conflict:
            stored = await _load(request, account_id, box_id)
    else:
        raise DatastoreConflict()
    number = mailbox_number(stored.get("mailbox"))
    if number is not None:
        await storage.vmboxes.release_mailbox(account_id, number, box_id)
    storage.events.publish(BoxesChanged(account_id, (box_id,)))
    data = to_response(stored, drop=READ_ONLY_KEYS)
    data["_read_only"] = {"deleted": True}
    return envelope.success(request, data, revision=revision)
