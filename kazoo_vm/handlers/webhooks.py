"""``/v2/webhooks`` and ``/v2/accounts/{A}/webhooks[/{W}]`` (crossbar ``cb_webhooks``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from .. import appkeys
from ..errors import BadIdentifier, DatastoreConflict, ValidationError
from ..http import envelope
from ..http.listing import listing_params, page_envelope
from ..http.payload import Payload
from ..http.validation import add_error
from ..kazoo import filters, naming
from ..kazoo.documents import gregorian_now, new_id, private_fields, public_fields, stamp, to_response
from ..storage.errors import Conflict, NotFound
from ..storage.webhooks import PVT_TYPE
from ..webhooks import hooks
from .common import author, config, location, payload, services, time_window

SCHEMA = "webhooks"
SAVE_RETRIES = 3
REENABLE = "re-enable"


def _fields(body: Payload) -> dict[str, Any]:
    if not isinstance(body.data, dict):
        raise ValidationError({"data": {"type": {"message": "Value did not match type(s): object",
                                                 "target": "object", "value": body.data}}})
    return {key: value for key, value in public_fields(body.data).items() if key not in ("id", "disable_reason")}


def _validate(request: web.Request, fields: dict[str, Any]) -> dict[str, Any]:
    """The schema, then the hook type's required modifiers (every error at once)."""
    validated, errors = request.app[appkeys.SCHEMAS].validate(SCHEMA, fields)
    if not errors:
        errors = hooks.check_modifiers(validated)
    if errors:
        raise ValidationError(errors)
    return dict(validated)


def _response(doc: dict[str, Any]) -> dict[str, Any]:
    """``maybe_leak_pvt_fields``: why an auto-disabled hook stopped."""
    data = to_response(doc)
    if isinstance(doc.get("pvt_disabled_message"), str):
        data["disable_reason"] = doc["pvt_disabled_message"]
    return data


def _stamp(request: web.Request, doc: dict[str, Any], account_id: str) -> None:
    stamp(doc, account_id=account_id, account_db=naming.encoded_db(naming.account_db(account_id)),
          pvt_type=PVT_TYPE, author=author(request),
          now=gregorian_now())


async def list_available(request: web.Request) -> web.Response:
    """The hook types kazoo_vm fires, with their modifiers (no token needed)."""
    return envelope.success(request, hooks.AVAILABLE, extra={"page_size": len(hooks.AVAILABLE)})


async def list_webhooks(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    params = listing_params(request.query, await payload(request), config(request).page_size)
    test = filters.build(request.query)
    keep = None if test is None else (lambda row: test(row.get("doc") or {}))
    page = await services(request).webhooks.listing(account_id, page_size=params.page_size, start=params.start,
                                                    keep=keep)
    data = [{key: value for key, value in row["value"].items() if value is not None}
            for row in page.rows if isinstance(row.get("value"), dict)]
    extra = page_envelope(params, len(data), page.next_start, always_start_key=False)
    return envelope.success(request, data, revision=envelope.list_revision(data), extra=extra)


async def list_attempts(request: web.Request) -> web.Response:
    """``…/webhooks/attempts`` and ``…/webhooks/{W}/attempts``: the recorded attempts of
    the time window (``created_from``/``created_to``, crossbar's maximum range by
    default), newest first, each with ``timestamp`` (its ``pvt_created``) and without
    ids and private fields (``normalize_attempt_results``). As Kazoo, the hook need not
    exist (a deleted hook keeps its history)."""
    account_id = request.match_info["account_id"]
    hook_id = request.match_info.get("webhook_id")
    body = await payload(request)
    params = listing_params(request.query, body, config(request).page_size)
    start, end = time_window(request, body, gregorian_now())
    page = await services(request).webhook_attempts.listing(
        account_id, hook_id, start, end, page_size=params.page_size, start=params.start,
        descending=params.descending)
    data = [{**public_fields(row["doc"]), "timestamp": row["doc"].get("pvt_created")} for row in page.rows]
    extra = page_envelope(params, len(data), page.next_start, always_start_key=False)
    return envelope.success(request, data, extra=extra)


async def create_webhook(request: web.Request) -> web.Response:
    account_id = request.match_info["account_id"]
    doc = _validate(request, _fields(await payload(request)))
    doc.update(_id=new_id(), pvt_type=PVT_TYPE)
    _stamp(request, doc, account_id)
    try:
        await services(request).webhooks.save(doc)
    except Conflict:
        raise DatastoreConflict() from None
    return envelope.success(request, _response(doc), status=201, revision=doc["_rev"],
                            headers={"Location": location(request, doc["_id"])})


async def _load(request: web.Request) -> dict[str, Any]:
    hook_id = request.match_info["webhook_id"]
    try:
        return await services(request).webhooks.fetch(request.match_info["account_id"], hook_id)
    except NotFound:
        raise BadIdentifier(hook_id) from None


async def get_webhook(request: web.Request) -> web.Response:
    doc = await _load(request)
    return envelope.success(request, _response(doc), revision=doc["_rev"])


async def _save(request: web.Request, fields: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """crossbar's ``load_merge`` (the stored private fields, the new public ones) and
    ``maybe_update_hook``: an enabled hook forgets why it was disabled."""
    doc = {**private_fields(stored), **fields}
    if hooks.is_enabled(doc):
        doc.pop("pvt_disabled_message", None)
    _stamp(request, doc, request.match_info["account_id"])
    await services(request).webhooks.save(doc)
    return doc


async def _change(request: web.Request, new_fields: Callable[[dict[str, Any]], dict[str, Any]]) -> web.Response:
    """Load, compute the new public fields from the stored hook, save; again on a
    conflicting write."""
    for _attempt in range(SAVE_RETRIES):
        stored = await _load(request)
        try:
            doc = await _save(request, new_fields(stored), stored)
        except Conflict:
            continue
        return envelope.success(request, _response(doc), revision=doc["_rev"])
    raise DatastoreConflict()


async def update_webhook(request: web.Request) -> web.Response:
    """POST: the public fields replaced."""
    fields = _validate(request, _fields(await payload(request)))
    return await _change(request, lambda _stored: fields)


async def patch_webhook(request: web.Request) -> web.Response:
    """PATCH: the request's fields merged over the stored ones."""
    changes = _fields(await payload(request))
    return await _change(request, lambda stored: _validate(request, {**public_fields(stored), **changes}))


async def delete_webhook(request: web.Request) -> web.Response:
    """Soft delete (``pvt_deleted``); its pending deliveries are dropped."""
    for _attempt in range(SAVE_RETRIES):
        stored = await _load(request)
        revision = stored["_rev"]
        stored["pvt_deleted"] = True
        _stamp(request, stored, request.match_info["account_id"])
        try:
            await services(request).webhooks.save(stored)
        except Conflict:
            continue
        data = _response(stored)
        data["_read_only"] = {"deleted": True}
        return envelope.success(request, data, revision=revision)
    raise DatastoreConflict()


async def reenable_webhooks(request: web.Request) -> web.Response:
    """PATCH of the collection with ``{"re-enable": true}``: the account's auto-disabled
    hooks are enabled again."""
    body = await payload(request)
    value = body.data.get(REENABLE) if isinstance(body.data, dict) else None
    errors: dict[str, Any] = {}
    if value is None:
        add_error(errors, REENABLE, "required", {"message": "re-enable is required to patch collections"})
    elif str(value).lower() != "true":
        add_error(errors, REENABLE, "enum", {"message": "value not found in enumerated list of values",
                                             "target": [True]})
    if errors:
        raise ValidationError(errors)
    account_id = request.match_info["account_id"]
    storage = services(request).webhooks
    for hook in await storage.of_accounts([account_id], fresh=True):
        if hook.get("enabled") is False and isinstance(hook.get("pvt_disabled_message"), str):
            hook["enabled"] = True
            hook.pop("pvt_disabled_message")
            _stamp(request, hook, account_id)
            try:
                await storage.save(hook)
            except Conflict:
                continue  # changed meanwhile: left as the other writer made it
    return envelope.success(request, "hooks updated")
