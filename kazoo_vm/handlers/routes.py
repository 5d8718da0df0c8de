"""The whole URL table. Every path also answers with a trailing slash."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from .. import appkeys
from . import accounts, auth, messages, messages_zip, openapi, schemas, vmboxes, webhooks

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ACCOUNT = "/v2/accounts/{account_id}"
VMBOXES = ACCOUNT + "/vmboxes"
# `messages` after /vmboxes is the account-wide listing, never a box id.
VMBOX = VMBOXES + "/{vmbox_id:(?!messages/?$)[^/]+}"
ACCOUNT_MESSAGES = VMBOXES + "/messages"
BOX_MESSAGES = VMBOX + "/messages"
# `raw` after /messages is the ZIP download, never a message id.
MESSAGE = BOX_MESSAGES + "/{message_id:(?!raw/?$)[^/]+}"
WEBHOOKS = ACCOUNT + "/webhooks"
# `attempts` after /webhooks is the account's attempt history, never a hook id.
WEBHOOK = WEBHOOKS + "/{webhook_id:(?!attempts/?$)[^/]+}"


def setup_routes(app: web.Application) -> None:
    router = app.router
    public: set[Handler] = set()
    app[appkeys.PUBLIC_HANDLERS] = public

    def _add(method: str, path: str, handler: Handler, *, is_public: bool = False) -> None:
        router.add_route(method, path, handler)
        router.add_route(method, path + "/", handler)
        if is_public:
            public.add(handler)

    _add("PUT", "/v2/api_auth", auth.api_auth, is_public=True)
    _add("PUT", "/v2/user_auth", auth.user_auth, is_public=True)

    _add("GET", VMBOXES, vmboxes.list_vmboxes)
    _add("PUT", VMBOXES, vmboxes.create_vmbox)
    _add("GET", VMBOX, vmboxes.get_vmbox)
    _add("POST", VMBOX, vmboxes.update_vmbox)
    _add("PATCH", VMBOX, vmboxes.patch_vmbox)
    _add("DELETE", VMBOX, vmboxes.delete_vmbox)

    _add("GET", ACCOUNT_MESSAGES, messages.list_account_messages)
    _add("GET", BOX_MESSAGES, messages.list_box_messages)
    _add("PUT", BOX_MESSAGES, messages.create_message)
    _add("POST", BOX_MESSAGES, messages.bulk_change)
    _add("DELETE", BOX_MESSAGES, messages.bulk_delete)
    _add("POST", BOX_MESSAGES + "/raw", messages_zip.download_zip)
    _add("GET", MESSAGE, messages.get_message)
    _add("POST", MESSAGE, messages.change_message)
    _add("DELETE", MESSAGE, messages.delete_message)
    _add("GET", MESSAGE + "/raw", messages.get_audio)
    _add("PUT", MESSAGE + "/raw", messages.put_audio)

    _add("GET", "/v2/webhooks", webhooks.list_available, is_public=True)
    _add("GET", WEBHOOKS, webhooks.list_webhooks)
    _add("PUT", WEBHOOKS, webhooks.create_webhook)
    _add("PATCH", WEBHOOKS, webhooks.reenable_webhooks)
    _add("GET", WEBHOOKS + "/attempts", webhooks.list_attempts)
    _add("GET", WEBHOOK + "/attempts", webhooks.list_attempts)
    _add("GET", WEBHOOK, webhooks.get_webhook)
    _add("POST", WEBHOOK, webhooks.update_webhook)
    _add("PATCH", WEBHOOK, webhooks.patch_webhook)
    _add("DELETE", WEBHOOK, webhooks.delete_webhook)

    _add("GET", "/v2/schemas", schemas.list_schemas, is_public=True)
    _add("GET", "/v2/schemas/{name}", schemas.get_schema, is_public=True)
    _add("POST", "/v2/schemas/{name}/validation", schemas.validate_document, is_public=True)
    _add("GET", "/v2/openapi.json", openapi.get_openapi, is_public=True)

    # What Monster UI needs besides the voicemail API when kazoo_vm stands alone.
    _add("GET", "/v2/auth/tokeninfo", accounts.token_info, is_public=True)
    _add("POST", "/v2/auth/tokeninfo", accounts.token_info, is_public=True)
    _add("GET", ACCOUNT, accounts.get_account)
    _add("POST", ACCOUNT, accounts.update_account)
    _add("GET", ACCOUNT + "/users", accounts.list_users)
    _add("GET", ACCOUNT + "/users/{user_id}", accounts.get_user)
    _add("POST", ACCOUNT + "/users/{user_id}", accounts.update_user)
    _add("PATCH", ACCOUNT + "/users/{user_id}", accounts.patch_user)
    _add("GET", ACCOUNT + "/apps_store", accounts.apps_store)
    _add("GET", ACCOUNT + "/apps_store/{app_id}/icon", accounts.public_not_found, is_public=True)
    _add("GET", "/v2/whitelabel/{domain}", accounts.public_not_found, is_public=True)
    _add("GET", "/v2/whitelabel/{domain}/{file}", accounts.public_not_found, is_public=True)
    _add("GET", ACCOUNT + "/ledgers/total", accounts.ledgers_total)
    _add("GET", ACCOUNT + "/limits", accounts.limits)
    for missing in ("/external_numbers", "/alerts", "/storage", "/cdrs/{cdr_id}"):
        _add("GET", ACCOUNT + missing, accounts.not_found)
