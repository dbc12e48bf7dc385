"""Album pages: the user's albums (``/albums``), one album (``/a/{slug}``, its public link), forms
to create one, add or remove images, pick the cover, and delete it."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from aiohttp import web
from aiohttp_session import get_session

from pixelfox import errors
from pixelfox.text import one_line
from pixelfox.v1 import common_pb2, manager_pb2
from web.calls import call
from web.keys import MANAGER
from web.paging import fetch_html_page
from web.sessions import current_user
from web.views.common import NOTICE, checked_form, referer_path, render
from web.views.pages import MIME, build_picture

ALBUMS_PAGE = 100  # albums per page of /albums (?before=<cursor> for older ones)


async def albums_page(request: web.Request) -> web.StreamResponse:
    user = current_user(await get_session(request))
    if user is None:
        raise web.HTTPSeeOther("/login?next=/albums")
    md = request.app[MANAGER].as_user(user.id)

    async def fetch(limit: int, cursor: str) -> Sequence[manager_pb2.Album]:
        reply = await call(request, "ListAlbums", manager_pb2.ListAlbumsRequest(limit=limit, before=cursor), md)
        return list(reply.albums)

    albums, next_before = await fetch_html_page(request, fetch, ALBUMS_PAGE)
    return await render(request, "albums.html", {"albums": albums, "next_before": next_before})


async def create_album(request: web.Request) -> web.StreamResponse:
    """A new album (``title``, ``description``), with the image ``image`` in it if given; when that image
    cannot go in (someone else's, unknown) nothing is kept: the album made first is deleted again (it
    stayed, so each retry of the refused form left one more)."""
    session, form = await checked_form(request)
    user = current_user(session)
    if user is None:
        raise errors.Unauthenticated("log in to create an album")
    req = manager_pb2.CreateAlbumRequest(title=one_line(form.get("title", "")), description=form.get("description", ""))
    album = await call(request, "CreateAlbum", req, request.app[MANAGER].as_user(user.id))
    slug = form.get("image", "")
    if slug:
        add = manager_pb2.UpdateAlbumRequest(slug=album.slug, add_images=[slug])
        try:
            await call(request, "UpdateAlbum", add, request.app[MANAGER].as_user(user.id))
        except errors.PixelfoxError:
            with contextlib.suppress(errors.PixelfoxError):  # the refusal is the answer, not this clean-up
                await call(request, "DeleteAlbum", manager_pb2.DeleteAlbumRequest(slug=album.slug),
                           request.app[MANAGER].as_user(user.id))
            raise
    raise web.HTTPSeeOther(f"/a/{album.slug}")


ADD_PAGE = 48  # images offered per page under "Add images"


async def album_page(request: web.Request) -> web.StreamResponse:
    """An album; its owner also gets the rename form and their images to add, :data:`ADD_PAGE` at a
    time, newest first (``?before=<cursor>`` pages through older ones)."""
    user = current_user(await get_session(request))
    md = request.app[MANAGER].as_user(user.id if user else "")
    album = await call(request, "GetAlbum", manager_pb2.GetAlbumRequest(slug=request.match_info["slug"]), md)
    is_owner = user is not None and (user.id == album.owner_id or user.role == "admin")
    mine: list[common_pb2.Image] = []
    more_before = ""
    if is_owner and user is not None:
        async def fetch(limit: int, cursor: str) -> Sequence[common_pb2.Image]:
            reply = await call(request, "ListImages", manager_pb2.ListImagesRequest(limit=limit, before=cursor), md)
            return list(reply.images)

        page, more_before = await fetch_html_page(request, fetch, ADD_PAGE)
        in_album = {i.slug for i in album.images}
        mine = [i for i in page if i.slug not in in_album]
    # og:image as on an image page (the cover's medium/large JPEG, with its size), not the 200 px
    # thumbnail behind cover_url; a private cover gets none, as cover_url does
    cover = next((i for i in album.images if i.slug == album.cover_slug and i.visibility != "private"), None)
    og = build_picture(cover).og if cover is not None else None
    ctx = {"album": album, "is_owner": is_owner, "mine": mine, "more_before": more_before,
           "paged": bool(request.query.get("before")), "og": og,
           "og_type": MIME.get(og.format.lower(), "") if og else ""}
    return await render(request, "album.html", ctx)


async def update_album(request: web.Request) -> web.StreamResponse:
    session, form = await checked_form(request)
    user = current_user(session)
    if user is None:
        raise errors.Unauthenticated("log in to change an album")
    slug = request.match_info["slug"]
    req = manager_pb2.UpdateAlbumRequest(slug=slug)
    action = form.get("action", "")
    image = form.get("image", "")
    if action == "add" and image:
        req.add_images.append(image)
    elif action == "remove" and image:
        req.remove_images.append(image)
    elif action == "cover":
        req.cover_slug = image
    elif action == "rename":
        req.title = one_line(form.get("title", ""))
        if "description" in form:  # a form without the field keeps the description
            req.description = form["description"]
    elif action == "delete":
        await call(request, "DeleteAlbum", manager_pb2.DeleteAlbumRequest(slug=slug),
                   request.app[MANAGER].as_user(user.id))
        session[NOTICE] = "Album deleted (its images stay)."
        raise web.HTTPSeeOther("/albums")
    else:
        raise errors.BadRequest("unknown album action")
    await call(request, "UpdateAlbum", req, request.app[MANAGER].as_user(user.id))
    back = referer_path(request)  # the album page it came from, with its ?before= page of images to add
    if not back.startswith(f"/a/{slug}"):
        back = f"/a/{slug}"
    paged = "before=" in back  # an 'Older images' page: back to its list of images to add, open
    raise web.HTTPSeeOther(back + ("#add-images" if action == "add" and paged else ""))
