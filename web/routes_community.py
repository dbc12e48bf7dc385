"""Issue 5's URLs: image management, oEmbed, albums, account settings, admin, JSON API v1."""

from __future__ import annotations

from aiohttp import web

from web.views import account, admin, albums, api_v1, manage

S = "{slug:[A-Za-z0-9_-]{1,64}}"


def setup_community_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(f"/i/{S}/download", manage.download, name="image_download")
    r.add_get(f"/i/{S}/original", manage.original, name="image_original")
    r.add_post(f"/i/{S}/edit", manage.edit_image, name="image_edit")
    r.add_post(f"/i/{S}/delete", manage.delete_image, name="image_delete")
    r.add_get(f"/i/{S}/report", manage.report_page, name="image_report_page")
    r.add_post(f"/i/{S}/report", manage.report_image, name="image_report")
    r.add_get("/oembed", manage.oembed, name="oembed")
    r.add_get("/albums", albums.albums_page, name="albums")
    r.add_post("/albums", albums.create_album, name="album_create")
    r.add_get(f"/a/{S}", albums.album_page, name="album")
    r.add_post(f"/a/{S}", albums.update_album, name="album_update")
    r.add_get("/settings", account.settings_page, name="settings")
    r.add_post("/settings/password", account.change_password, name="settings_password")
    r.add_post("/settings/keys", account.create_key, name="settings_key_create")
    r.add_post("/settings/keys/{key_id:[A-Za-z0-9]{1,40}}/revoke", account.revoke_key, name="settings_key_revoke")
    r.add_get("/admin", admin.overview, name="admin")
    r.add_get("/admin/users", admin.users, name="admin_users")
    r.add_post("/admin/users/{name:[A-Za-z0-9_.-]{3,32}}", admin.set_disabled, name="admin_user_disabled")
    r.add_get("/admin/images", admin.images, name="admin_images")
    r.add_get("/admin/reports", admin.reports, name="admin_reports")
    r.add_post("/admin/reports/{report_id:[A-Za-z0-9]{1,40}}", admin.resolve, name="admin_resolve")
    api_v1.setup(app)
