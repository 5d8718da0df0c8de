"""The whole URL table. Every path also answers with a trailing slash."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from . import appkeys
from .handlers import auth, vmboxes

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ACCOUNT = "/v2/accounts/{account_id}"
VMBOXES = ACCOUNT + "/vmboxes"
# `messages` after /vmboxes is the account-wide listing, never a box id.
VMBOX = VMBOXES + "/{vmbox_id:(?!messages/?$)[^/]+}"


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
