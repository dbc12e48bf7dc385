"""``POST /sharex``: a ShareX custom uploader (.sxcu) with a fresh API key (ECOSYSTEM.md).

A POST with the CSRF token, not a GET: it mints a key, which is a state change.
"""

from __future__ import annotations

import json
import re

from aiohttp import web

from pixelfox import errors
from web.keys import MANAGER, SETTINGS, STATE
from web.sessions import current_user
from web.views.common import checked_form


def sxcu(name: str, base_url: str, api_key: str) -> dict[str, object]:
    """ShareX >= 14 reads the reply through ``{json:path}`` templates."""
    return {
        "Version": "15.0.0",
        "Name": name,
        "DestinationType": "ImageUploader",
        "RequestMethod": "POST",
        "RequestURL": f"{base_url}/api/v1/images",
        "Headers": {"Authorization": f"Bearer {api_key}"},
        "Body": "MultipartFormData",
        "FileFormName": "file",
        "URL": "{json:url}",
        "ThumbnailURL": "{json:thumbnail_url}",
        "DeletionURL": "{json:deletion_url}",
        "ErrorMessage": "{json:error.message}",
    }


async def sharex_config(request: web.Request) -> web.Response:
    session, _form = await checked_form(request)
    user = current_user(session)
    if user is None:
        raise errors.Unauthenticated("log in to get a ShareX configuration")
    reply = await request.app[MANAGER].create_api_key(user.id, "ShareX")
    site = request.app[SETTINGS].site_name
    body = json.dumps(sxcu(f"{site} ({user.name})", request.app[STATE].public_url, reply.key), indent=2)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{site}-{user.name}")
    return web.Response(
        text=body,
        content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{safe}.sxcu"', "Cache-Control": "no-store"},
    )
