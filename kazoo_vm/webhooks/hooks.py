"""The hook types kazoo_vm fires, their filters and bodies, as Kazoo 4.3's webhooks app
(``webhooks_object``, ``webhooks_notifications``, ``webhooks_util``, ``kzd_webhook``)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

from ..errors import ValidationErrors
from ..events import DocChanged, VoicemailNotice
from ..http.validation import add_error
from ..kazoo import naming
from ..kazoo.documents import as_dict

OBJECT = "object"
NOTIFICATIONS = "notifications"
ALL = "all"
# kazoo_vm writes these of Kazoo's ?DOC_TYPES.
OBJECT_TYPES = ("vmbox", "mailbox_message")
DOC_ACTIONS = ("doc_created", "doc_edited", "doc_deleted")
# kapi_notifications' definitions of the notifications kazoo_vm publishes.
NOTICES = {
    "voicemail_deleted": ("Voicemail Message Deleted",
                          "This event is triggered any time a voicemail message is deleted in the voicemail box"),
    "voicemail_new": ("New Voicemail Message", "This event is triggered any time a voicemail message is left"),
    "voicemail_saved": ("Voicemail Message Saved",
                        "This event is triggered any time a voicemail message is saved in the voicemail box "
                        "'new' folder"),
}
APP_NAME = "callflow"  # what kvm_util publishes voicemail notifications as
APP_VERSION = "4.0.0"
# webhooks.hrl ?DEFAULT_FAILURE_COUNT; kzd_webhook's default and clamp of ``retries``.
FAILURE_COUNT = 6
DEFAULT_ATTEMPTS = 3
MIN_ATTEMPTS, MAX_ATTEMPTS = 1, 5
DISABLED_MESSAGE = "too many failed attempts"  # webhooks_disabler


def _modifier_list(description: str, items: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "array", "description": description, "items": list(items)}


# The webhook_meta documents crossbar lists at GET /v2/webhooks (ids without ``webhooks_``).
AVAILABLE: list[dict[str, Any]] = [
    {"id": NOTIFICATIONS, "name": "Notifications Webhook",
     "description": "Fire a webhook when a notification event is triggered in Kazoo",
     "modifiers": {"type": {"type": "object", "items": {
         ALL: {"friendly_name": "All", "description": "This event is triggered for any notification events"},
         **{name: {"friendly_name": friendly, "description": text} for name, (friendly, text) in NOTICES.items()}}}}},
    {"id": OBJECT, "name": "Object",
     "description": "Receive notifications when objects (like JSON document objects) in Kazoo are changed",
     "modifiers": {"type": _modifier_list("A list of object types to handle", OBJECT_TYPES),
                   "action": _modifier_list("A list of object actions to handle", DOC_ACTIONS)}},
]


def check_modifiers(hook: dict[str, Any]) -> ValidationErrors:
    """crossbar's ``check_modifiers``: every modifier of the hook type must be in
    ``custom_data`` with one of its values (keys as 4.3 names them: the modifier)."""
    errors: ValidationErrors = {}
    definition = next((meta for meta in AVAILABLE if meta["id"] == hook.get("hook")), None)
    custom = as_dict(hook.get("custom_data"))
    for key, modifier in (definition or {}).get("modifiers", {}).items():
        value = custom.get(key)
        if value is None:
            add_error(errors, key, "required", {"message": "missing required modifier"})
            continue
        items = modifier["items"]
        allowed = list(items) if isinstance(items, dict) else items
        if value not in allowed:
            add_error(errors, key, "enum", {"message": "value not found in enumerated list of values",
                                            "cause": value, "target": allowed})
    return errors


def attempts(hook: dict[str, Any]) -> int:
    """``kzd_webhook:retries/1``: the total attempts, ``retries`` clamped to 1..5 (3 when unset)."""
    value = hook.get("retries")
    if not isinstance(value, int) or isinstance(value, bool):
        value = DEFAULT_ATTEMPTS
    return max(MIN_ATTEMPTS, min(MAX_ATTEMPTS, value))


def verb(hook: dict[str, Any]) -> str:
    """``kzd_webhook:verb/1``: get, post or put (``get`` when unset or unknown)."""
    value = str(hook.get("http_verb") or "get").lower()
    return value if value in ("get", "post", "put") else "get"


def body_format(hook: dict[str, Any]) -> str:
    value = str(hook.get("format") or "form-data").lower()
    return value if value in ("form-data", "json") else "form-data"


def is_enabled(hook: dict[str, Any]) -> bool:
    return hook.get("enabled") is not False


def listens(hook: dict[str, Any], hook_event: str, account_id: str) -> bool:
    """``webhooks_util:find_webhooks``: a live hook of this type (or ``all``) of the
    account itself, or of an ancestor with ``include_subaccounts``."""
    if not is_enabled(hook) or hook.get("hook") not in (hook_event, ALL):
        return False
    return hook.get("pvt_account_id") == account_id or hook.get("include_subaccounts") is True


def object_body(event: DocChanged) -> dict[str, Any] | None:
    """``webhooks_object:format_event``; None for documents the object hook ignores."""
    if event.doc_type not in OBJECT_TYPES or event.account_id is None:
        return None
    return {"id": event.doc_id, "account_id": event.account_id, "action": f"doc_{event.action}",
            "type": event.doc_type}


def _split(address: Any) -> tuple[str | None, str | None]:
    if not isinstance(address, str) or not address:
        return None, None
    user, _, realm = address.partition("@")
    return user, realm or None


def notification_body(notice: VoicemailNotice, node: str) -> dict[str, Any]:
    """The notification as kvm_util publishes it, normalised (``kz_json:normalize``:
    lower-case keys, ``-`` → ``_``); fields that are unknown are left out."""
    message = notice.message
    metadata = as_dict(message.get("metadata"))
    from_user, from_realm = _split(metadata.get("from"))
    to_user, to_realm = _split(metadata.get("to"))
    fields: dict[str, Any] = {
        "from_user": from_user, "from_realm": from_realm, "to_user": to_user, "to_realm": to_realm,
        "reason": notice.reason if notice.name == "voicemail_deleted" else None,
        "account_db": naming.encoded_db(naming.account_db(notice.account_id)),
        "account_id": notice.account_id,
        "voicemail_box": notice.box.get("_id") or message.get("source_id"),
        "voicemail_id": metadata.get("media_id") or message.get("_id"),
        "caller_id_number": metadata.get("caller_id_number"), "caller_id_name": metadata.get("caller_id_name"),
        "voicemail_timestamp": metadata.get("timestamp"), "voicemail_length": metadata.get("length"),
        "voicemail_transcription": as_dict(metadata.get("transcription")).get("text")
        if notice.name == "voicemail_new" else None,
        "call_id": metadata.get("call_id"),
        "app_name": APP_NAME, "app_version": APP_VERSION, "event_category": "notification",
        "event_name": notice.name, "msg_id": uuid.uuid4().hex, "node": node,
    }
    return {key: value for key, value in fields.items() if value is not None}


def wants_object(hook: dict[str, Any], body: dict[str, Any]) -> bool:
    """``webhooks_object:match_action_type`` (4.3): with ``custom_data``, its ``action``
    and ``type`` must both match; an ``all`` hook takes everything."""
    if hook.get("hook") != OBJECT:
        return True
    custom = hook.get("custom_data")
    if not isinstance(custom, dict) or not custom:
        return True
    return bool(custom.get("action") == body["action"] and custom.get("type") == body["type"])


def wants_notification(hook: dict[str, Any], name: str) -> bool:
    """``webhooks_notifications:match_action_type``: ``custom_data.type`` is the
    event's name or ``all``."""
    if hook.get("hook") != NOTIFICATIONS:
        return True
    custom = hook.get("custom_data")
    if not isinstance(custom, dict) or not custom:
        return True
    return bool(custom.get("type") in (name, ALL))


def passes_modifiers(hook: dict[str, Any], body: dict[str, Any]) -> bool:
    """``webhooks_util:maybe_fire_hook``: each key of the hook's ``modifiers`` that the
    body has must hold the value (or one of the listed values)."""
    for key, wanted in as_dict(hook.get("modifiers")).items():
        if key not in body or wanted == []:
            continue
        if isinstance(wanted, list):
            if body[key] not in wanted:
                return False
        elif body[key] != wanted:
            return False
    return True


def with_custom_data(hook: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """``fire_hook``: ``custom_data`` merged over the body (its values win)."""
    return {**body, **as_dict(hook.get("custom_data"))}


def querystring(body: dict[str, Any]) -> str:
    """``kz_http_util:json_to_querystring``: ``k=v&…``, nested objects as ``k[sub]=v``,
    lists as ``k[]=v``."""
    pairs: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}[{key}]", sub)
        elif isinstance(value, list):
            for sub in value:
                walk(f"{prefix}[]", sub)
        else:
            pairs.append((prefix, value))

    for key, value in body.items():
        walk(str(key), value)

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else str(value)

    return "&".join(f"{quote(key, safe='[]')}={quote(text(value), safe='')}" for key, value in pairs)


# -- what an attempt leaves behind (webhooks_util:debug_req/debug_resp) -------------------

BAD_RESPONSE = "bad response code"
CLIENT_ERROR = "kazoo http client error"
RETRIES_EXCEEDED = "retries exceeded"


def attempt_request(hook: dict[str, Any], event_id: str, uri: str, headers: dict[str, str],
                    body: str) -> dict[str, Any]:
    """The request half of an attempt's record."""
    fields = {"hook_id": hook.get("_id"), "hook_event": hook.get("hook"), "custom_data": hook.get("custom_data"),
              "event_id": event_id, "uri": uri, "method": verb(hook), "req_headers": dict(headers),
              "req_body": body}
    return {key: value for key, value in fields.items() if value is not None}


def answered_attempt(request: dict[str, Any], status: int, headers: dict[str, str], body: str,
                     retries: int | None) -> dict[str, Any]:
    """An attempt that got an answer; ``retries`` (the attempts left, this one
    included) is None for a success, which Kazoo records without them."""
    record: dict[str, Any] = {"resp_status_code": str(status), "resp_headers": dict(headers), "resp_body": body}
    if retries is not None:
        record.update({"try": retries, "retries_left": RETRIES_EXCEEDED if retries == 1 else retries - 1})
    record["result"] = "success" if status == 200 else "failure"
    if status != 200:
        record["reason"] = BAD_RESPONSE
    return {**record, **request}


def unanswered_attempt(request: dict[str, Any], client_error: str, retries: int) -> dict[str, Any]:
    """An attempt that got no answer (refused, timed out, no such host)."""
    return {"result": "failure", "reason": CLIENT_ERROR, "retries": retries,
            "retries_left": RETRIES_EXCEEDED if retries == 1 else retries, "client_error": client_error,
            **request}
