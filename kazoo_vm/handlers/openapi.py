"""``GET /v2/openapi.json``: the OpenAPI 3.0 document of the API (no token needed)."""

from __future__ import annotations

from aiohttp import web

from ..http import openapi


async def get_openapi(request: web.Request) -> web.Response:
    """The document as built from the router and ``schemas/`` (no envelope)."""
    return web.Response(body=openapi.document(request.app), content_type="application/json")
