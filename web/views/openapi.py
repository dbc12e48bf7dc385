"""The hand-written OpenAPI 3.0 document of ``/api/v1`` (served at ``/api/v1/openapi.json``)."""

from __future__ import annotations

from typing import Any

SLUG_PARAM: dict[str, Any] = {
    "name": "slug", "in": "path", "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "minLength": 1, "maxLength": 64},
}
UPLOAD_ID_PARAM: dict[str, Any] = {
    "name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9A-HJKMNP-TV-Z]{26}$"},
}
LIST_PARAMS: list[dict[str, Any]] = [
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}},
    {"name": "before", "in": "query", "required": False,
     "schema": {"type": "string", "maxLength": 64},
     "description": "cursor: the previous page's next_before (stays valid if that item is deleted), or the id "
                    "of the last item seen; anything else is a 400"},
]


def _json(ref: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    names = {400: "bad request", 401: "not authenticated", 403: "not allowed (CSRF, role or owner)",
             404: "not found (also: someone else's private image)",
             408: "the request body stopped arriving (no byte for body_idle_s, 60 s): send it again",
             409: "conflict (the state changed first)",
             413: "too large, or over the user's storage quota (code quota-exceeded; not worth retrying)",
             415: "unsupported format",
             429: "too many requests or open uploads (Retry-After says when to try again)",
             503: "a node is unavailable, try again"}
    return {str(c): {"description": names[c], **_json("Error")} for c in codes}


def _ok(ref: str, desc: str = "OK", status: str = "200") -> dict[str, Any]:
    return {status: {"description": desc, **_json(ref)}}


VARIANT = {
    "type": "object",
    "properties": {
        "name": {"type": "string"}, "format": {"type": "string"}, "width": {"type": "integer"},
        "height": {"type": "integer"}, "bytes": {"type": "integer"}, "url": {"type": "string"},
    },
}
IMAGE = {
    "type": "object",
    "required": ["id", "url", "status"],
    "properties": {
        "id": {"type": "string"}, "url": {"type": "string"},
        "status": {"type": "string", "enum": ["processing", "ready", "failed", "lost"],
                   "description": "lost: processed, but no storage node has a copy of its files any more (every URL "
                                  "is empty; error says so): its owner uploads the same file again to restore it"},
        "error": {"nullable": True, "allOf": [{"$ref": "#/components/schemas/ErrorBody"}],
                  "description": "why the image failed (the processing's code and message), or code files-lost "
                                 "for a lost one; null otherwise"},
        "filename": {"type": "string"}, "title": {"type": "string"}, "description": {"type": "string"},
        "visibility": {"type": "string", "enum": ["public", "private"]}, "keep_metadata": {"type": "boolean"},
        "owner": {"type": "string"}, "format": {"type": "string"}, "width": {"type": "integer"},
        "height": {"type": "integer"}, "frames": {"type": "integer"}, "bytes": {"type": "integer"},
        "sha256": {"type": "string"}, "original_url": {
            "type": "string",
            "description": "the clean original (metadata removed; empty while processing); the stored upload with "
                           "its EXIF and GPS (signed, expiring) when the owner opted in with keep_metadata, or in "
                           "JSON-API answers (not upload answers) to the owner's or an admin's browser session"},
        "thumbnail_url": {"type": "string"},
        "created_at": {"type": "string"}, "deletion_url": {"type": "string"},
        "expires_at": {"type": "string", "nullable": True,
                       "description": "ISO 8601 UTC when the image is deleted (its upload's expiration); null: never"},
        "variants": {"type": "array", "items": {"$ref": "#/components/schemas/Variant"}},
        "exif": {"type": "object", "additionalProperties": {"type": "string"},
                 "description": "EXIF fields as text: make, model, lens, taken_at, exposure_time, f_number, iso, "
                                "focal_length (never GPS)"},
        "location": {"type": "object", "nullable": True, "description": "GPS position; owner and admins only",
                     "properties": {"latitude": {"type": "number"}, "longitude": {"type": "number"}}},
    },
}
ALBUM = {
    "type": "object",
    "required": ["id", "url", "title"],
    "properties": {
        "id": {"type": "string"}, "url": {"type": "string"}, "title": {"type": "string"},
        "description": {"type": "string"}, "owner": {"type": "string"}, "cover": {"type": "string"},
        "cover_url": {"type": "string"}, "created_at": {"type": "string"}, "image_count": {"type": "integer"},
        "images": {"type": "array", "items": {"$ref": "#/components/schemas/Image"}},
    },
}
IMAGE_PATCH = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "title": {"type": "string", "maxLength": 255, "nullable": True, "description": "null clears it"},
        "description": {"type": "string", "maxLength": 2000, "nullable": True, "description": "null clears it"},
        "visibility": {"type": "string", "enum": ["public", "private"]},
        "keep_metadata": {"type": "boolean"},
    },
}
ALBUM_CREATE = {
    "type": "object", "additionalProperties": False, "required": ["title"],
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": {"type": "string", "maxLength": 2000},
    },
}
ALBUM_PATCH = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": {"type": "string", "maxLength": 2000, "nullable": True, "description": "null clears it"},
        "add_images": {"type": "array", "maxItems": 100, "items": {"type": "string"}},
        "remove_images": {"type": "array", "maxItems": 100, "items": {"type": "string"}},
        "cover": {"type": "string", "maxLength": 64, "nullable": True,
                  "description": "an image id of the album; \"\" or null clears it"},
    },
}

#: what an upload's ``visibility`` does (POST /api/v1/images, POST /api/v1/uploads)
UPLOAD_VISIBILITY = ("`private`: the new image is private from its first answer on (its links open only for "
                     "the caller and admins); a 400 for an anonymous upload. The caller's existing public image "
                     "of the same bytes is never the answer then: a private upload makes its own private image. "
                     "Anything but public or private is a 400 naming it")

NEW_UPLOAD = {
    "type": "object", "additionalProperties": False, "required": ["size"],
    "properties": {
        "filename": {"type": "string", "maxLength": 255, "description": "shown only, never trusted"},
        "size": {"type": "integer", "minimum": 1, "description": "bytes the client will send"},
        "content_type": {"type": "string", "maxLength": 100, "description": "declared; the bytes decide"},
        "title": {"type": "string", "maxLength": 255},
        "sha256": {"type": "string", "pattern": "^([0-9a-fA-F]{64})?$",
                   "description": "optional: the file's SHA-256, 64 hex digits in either case (kept in lower "
                                  "case); \"\" is the same as leaving it out. When the caller already has a "
                                  "lasting image of these bytes (same size), the answer is 200 UploadDeduplicated, "
                                  "no upload to send. Used for nothing else: an upload that goes ahead is hashed "
                                  "by the server"},
        "visibility": {"type": "string", "enum": ["public", "private"], "default": "public", "nullable": True,
                       "description": UPLOAD_VISIBILITY},
    },
}
TICKET_RENEWAL = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "exclude_address": {"type": "string", "nullable": True, "maxLength": 255,
                            "description": "optional: the upload_address of an upload node that stopped answering; "
                                           "the new ticket points at another healthy upload node when there is one "
                                           "(the same one otherwise)"},
    },
}

UPLOAD_DEDUPLICATED = {
    "type": "object", "required": ["id", "status", "deduplicated", "image"],
    "properties": {
        "id": {"type": "string", "nullable": True, "description": "null: no upload was made"},
        "status": {"type": "string", "enum": ["complete"]},
        "deduplicated": {"type": "boolean", "enum": [True]},
        "image": {"$ref": "#/components/schemas/Image"},
    },
}
UPLOAD_TICKET = {
    "type": "object",
    "required": ["id", "upload_url", "ticket", "expires_at", "chunk_size", "max_size", "upload_address"],
    "properties": {
        "id": {"type": "string"}, "upload_url": {"type": "string", "description": "tus 1.0 upload URL"},
        "ticket": {"type": "string", "description": "send as Authorization: Bearer <ticket> to upload_url"},
        "expires_at": {"type": "string", "format": "date-time"}, "chunk_size": {"type": "integer"},
        "max_size": {"type": "integer"}, "upload_address": {"type": "string", "description": "gRPC host:port"},
        "status": {"type": "string", "enum": ["open"]}, "deduplicated": {"type": "boolean", "enum": [False]},
    },
}
DEDUPLICATED = {"type": "boolean",
                "description": "true when the caller already had these bytes (same SHA-256, a copy that does not "
                               "expire): the image is that existing one, unchanged; a title sent along was not "
                               "applied"}
NOTE = {"type": "string",
        "description": "only when deduplicated and the existing image is private: says that its links open only "
                       "for its owner"}
UPLOADED_IMAGE = {"allOf": [{"$ref": "#/components/schemas/Image"},
                            {"type": "object", "required": ["deduplicated", "visibility"],
                             "properties": {"deduplicated": DEDUPLICATED, "note": NOTE}}]}
UPLOAD_PROGRESS = {
    "type": "object", "required": ["id", "status", "offset", "size", "progress"],
    "properties": {
        "id": {"type": "string"},
        "status": {"type": "string", "enum": ["open", "paused", "complete", "failed", "expired", "abandoned"],
                   "description": "paused: its ticket ended but its state lives; its owner renews the ticket "
                                  "(POST /api/v1/uploads/{id}/ticket) and resumes it"},
        "offset": {"type": "integer"},
        "size": {"type": "integer"}, "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "expires_at": {"type": "string", "nullable": True,
                       "description": "open and paused: when nothing can resume it any more, a renewal included"},
        "ticket_expires_at": {"type": "string", "nullable": True,
                              "description": "open and paused: the current ticket's last accepted second "
                                             "(tus Upload-Expires)"},
        "filename": {"type": "string"},
        "image": {"nullable": True, "allOf": [{"$ref": "#/components/schemas/Image"}],
                  "description": "once complete; its deletion_url is set for the image's owner"},
        "deduplicated": DEDUPLICATED, "note": NOTE,
        "error": {"nullable": True, "allOf": [{"$ref": "#/components/schemas/ErrorBody"}]},
    },
}
CHEVERETO_FORM = {
    "type": "object", "required": ["source"],
    "properties": {
        "source": {"type": "string", "description": "the file (a file part) or its base64; ImgBB's name `image` "
                                                   "works too; URLs are refused"},
        "key": {"type": "string", "description": "API key (or header X-API-Key)"},
        "title": {"type": "string", "maxLength": 255}, "album_id": {"type": "string"},
        "expiration": {"type": "string", "description": "ISO 8601 duration (PT5M, P3D) or seconds"},
        "format": {"type": "string", "enum": ["json", "txt", "redirect"], "default": "json"},
        "visibility": {"type": "string", "enum": ["public", "private"], "default": "public",
                       "description": "ours, as on /api/v1/images"},
    },
}
DELETION_PATH = "/api/v1/delete/{slug}/{owner}/{token}"

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "PixelFox API", "version": "1.0.0",
        "description": "Images and albums. Authenticate with `Authorization: Bearer <API key>` (or "
                       "`X-API-Key`, or Basic with the key as user name: `curl -u pfx_...:`), or a browser "
                       "session plus `X-CSRF-Token` for changes. A `key` query parameter is a 400 on "
                       "/api/v1 calls: only /api/1/upload reads a key from the URL.",
    },
    "security": [{"bearer": []}, {"apiKey": []}, {"basic": []}],
    "paths": {
        "/api/v1/images": {
            "get": {"operationId": "listImages", "summary": "The caller's images, newest first",
                    "parameters": LIST_PARAMS,
                    "responses": {**_ok("ImageList"), **_errors(400, 401)}},
            "post": {
                "operationId": "uploadImage", "summary": "Upload an image",
                "parameters": [{"name": "wait", "in": "query", "required": False, "schema": {"type": "string"},
                                "description": "seconds to wait for ready; 0 = answer at once"},
                               {"name": "expiration", "in": "query", "required": False, "schema": {"type": "string"},
                                "description": "ISO 8601 duration (PT1H) or seconds until the image is deleted; "
                                               "or the form field of that name, not both"},
                               {"name": "visibility", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["public", "private"]},
                                "description": "or the form field of that name, not both"}],
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"},
                                   "title": {"type": "string", "maxLength": 255},
                                   "expiration": {"type": "string"},
                                   "visibility": {"type": "string", "enum": ["public", "private"],
                                                  "default": "public", "description": UPLOAD_VISIBILITY}}}}}},
                "responses": {**_ok("UploadedImage", "created", "201"),
                              **_errors(400, 401, 403, 408, 413, 415, 429, 503)},
            },
        },
        "/api/v1/images/{slug}": {
            "parameters": [SLUG_PARAM],
            "get": {"operationId": "getImage", "summary": "One image",
                    "responses": {**_ok("Image"), **_errors(401, 404)}},
            "patch": {"operationId": "updateImage",
                      "summary": "Change title, description, visibility or keep_metadata (owner or admin)",
                      "requestBody": {"required": True, **_json("ImagePatch")},
                      # 409: another visibility change of it under way, or still processing
                      "responses": {**_ok("Image"), **_errors(400, 401, 403, 404, 409, 413, 503)}},
            "delete": {"operationId": "deleteImage",
                       "summary": "Delete the image and every copy of its files (owner or admin)",
                       "responses": {**_ok("Deleted"), **_errors(401, 403, 404)}},
        },
        "/api/v1/albums": {
            "get": {"operationId": "listAlbums", "summary": "The caller's albums", "parameters": LIST_PARAMS,
                    "responses": {**_ok("AlbumList"), **_errors(400, 401)}},
            "post": {"operationId": "createAlbum", "summary": "Create an album",
                     "requestBody": {"required": True, **_json("AlbumCreate")},
                     "responses": {**_ok("Album", "created", "201"), **_errors(400, 401, 403, 413)}},
        },
        "/api/v1/albums/{slug}": {
            "parameters": [SLUG_PARAM],
            "get": {"operationId": "getAlbum", "summary": "One album (private images only for the owner)",
                    "responses": {**_ok("Album"), **_errors(401, 404)}},
            "patch": {"operationId": "updateAlbum", "summary": "Rename, add or remove images, set the cover (owner)",
                      "requestBody": {"required": True, **_json("AlbumPatch")},
                      "responses": {**_ok("Album"), **_errors(400, 401, 403, 404, 413)}},
            "delete": {"operationId": "deleteAlbum", "summary": "Delete the album (not its images)",
                       "responses": {**_ok("Deleted"), **_errors(401, 403, 404)}},
        },
        "/api/v1/me": {"get": {"operationId": "me", "summary": "The calling user",
                               "responses": {**_ok("Me"), **_errors(401)}}},
        "/api/v1/uploads": {
            "post": {"operationId": "createUpload",
                     "summary": "Start a resumable upload: a ticket for tus 1.0 at upload_url "
                                "(or gRPC at upload_address)",
                     "requestBody": {"required": True, **_json("NewUpload")},
                     "responses": {**_ok("UploadDeduplicated", "the caller's image of the declared sha256: "
                                                                      "nothing to upload"),
                                   **_ok("UploadTicket", "created", "201"), **_errors(400, 401, 403, 413, 429, 503)}},
            "get": {"operationId": "listUploads",
                    "summary": "The caller's open (unfinished) resumable uploads, newest first, at most the "
                               "open-upload limit's worth: the ids to resume or cancel",
                    "responses": {**_ok("UploadList"), **_errors(401)}},
        },
        "/api/v1/uploads/{id}": {
            "parameters": [UPLOAD_ID_PARAM],
            "get": {"operationId": "getUpload", "summary": "A resumable upload's progress; the image once it completed",
                    "responses": {**_ok("UploadProgress"), **_errors(401, 404)}},
            "delete": {"operationId": "cancelUpload",
                       "summary": "Cancel an open upload without its ticket (owner or admin): its open-upload "
                                  "slot frees at once and its ticket is refused from then on",
                       "responses": {"204": {"description": "cancelled"}, **_errors(401, 403, 404, 409)}},
        },
        "/api/v1/uploads/{id}/ticket": {
            "parameters": [UPLOAD_ID_PARAM],
            "post": {"operationId": "renewUploadTicket",
                     "summary": "A fresh ticket for an open upload (owner or admin, never by the old ticket): it "
                                "resumes after its first ticket ended, while its state lives (upload_ttl_s after "
                                "its last chunk); 404 once it expired, 409 once it completed, failed or was "
                                "cancelled, 403 for an anonymous upload",
                     "requestBody": {"required": False, **_json("TicketRenewal")},
                     "responses": {**_ok("UploadTicket"), **_errors(400, 401, 403, 404, 409, 413, 429, 503)}},
        },
        DELETION_PATH: {
            "parameters": [SLUG_PARAM, {"name": "owner", "in": "path", "required": True,
                                        "schema": {"type": "string", "pattern": "^([0-9A-Z]{26}|anonymous)$"}},
                           {"name": "token", "in": "path", "required": True,
                            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"}}],
            "get": {"operationId": "confirmDeletion", "security": [],
                    "summary": "The deletion URL of an upload answer (deletion_url): a confirmation page, "
                               "deletes nothing",
                    "responses": {"200": {"description": "the image to delete: JSON, or to a browser (Accept "
                                                         "ranks text/html first) a page whose button POSTs here",
                                          "content": {"application/json": {"schema": {
                                              "type": "object", "required": ["id", "title", "thumbnail_url", "delete"],
                                              "properties": {"id": {"type": "string"}, "title": {"type": "string"},
                                                             "thumbnail_url": {"type": "string"},
                                                             "delete": {"type": "string"}}}},
                                              "text/html": {"schema": {"type": "string"}}}},
                                  **_errors(403, 404)}},
            "post": {"operationId": "deleteByDeletionUrl", "security": [],
                     "summary": "Delete the image through its deletion URL (no session or key needed)",
                     "responses": {**_ok("DeletedBySlug"), **_errors(403, 404)}},
            "delete": {"operationId": "deleteByDeletionUrlDelete", "security": [],
                       "summary": "The same as POST", "responses": {**_ok("DeletedBySlug"), **_errors(403, 404)}},
        },
        "/api/1/upload": {
            "post": {
                "operationId": "cheveretoUpload", "security": [{"apiKey": []}, {"keyField": []}],
                "summary": "Chevereto API v1 / ImgBB upload, for clients made for those hosts",
                "description": "Errors come in Chevereto's shape (CheveretoError), not Error. `format=txt` answers "
                               "the direct URL as text/plain (with a `Pixelfox-Note` header when it is the "
                               "caller's existing private image), `format=redirect` a 303 to the image page.",
                "requestBody": {"required": True, "content": {
                    "multipart/form-data": {"schema": CHEVERETO_FORM},
                    "application/x-www-form-urlencoded": {"schema": CHEVERETO_FORM}}},
                "responses": {
                    "200": {"description": "uploaded", "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/CheveretoUpload"}},
                        "text/plain": {"schema": {"type": "string"}}}},
                    "303": {"description": "format=redirect: the image page"},
                    **{str(c): {"description": d, "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/CheveretoError"}}}}
                       for c, d in ((400, "bad request"), (401, "no or wrong key"),
                                    (403, "album_id is another user's album"), (404, "album_id: no such album"),
                                    (413, "too large, or over the storage quota"), (415, "unsupported format"),
                                    (429, "too many requests"),
                                    (503, "a node is unavailable"))},
                },
            },
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "basic": {"type": "http", "scheme": "basic",
                      "description": "the API key as user name (any password) or as password"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "keyField": {"type": "apiKey", "in": "query", "name": "key",
                         "description": "Chevereto's key, in the query or as a form field"},
        },
        "schemas": {
            "ErrorBody": {"type": "object", "required": ["code", "message"],
                          "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
            "Error": {"type": "object", "required": ["error"],
                      "properties": {"error": {"$ref": "#/components/schemas/ErrorBody"}}},
            "Variant": VARIANT,
            "Image": IMAGE,
            "UploadedImage": UPLOADED_IMAGE,
            "ImageList": {"type": "object", "required": ["images"], "properties": {
                "images": {"type": "array", "items": {"$ref": "#/components/schemas/Image"}},
                "next_before": {"type": "string", "nullable": True}}},
            "ImagePatch": IMAGE_PATCH,
            "Album": ALBUM,
            "AlbumList": {"type": "object", "required": ["albums"], "properties": {
                "albums": {"type": "array", "items": {"$ref": "#/components/schemas/Album"}},
                "next_before": {"type": "string", "nullable": True}}},
            "AlbumCreate": ALBUM_CREATE,
            "AlbumPatch": ALBUM_PATCH,
            "Deleted": {"type": "object", "required": ["deleted"], "properties": {
                "deleted": {"type": "boolean"}, "objects_deleted": {"type": "integer"},
                "objects_pending": {"type": "integer"}}},
            "NewUpload": NEW_UPLOAD,
            "TicketRenewal": TICKET_RENEWAL,
            "UploadTicket": UPLOAD_TICKET,
            "UploadDeduplicated": UPLOAD_DEDUPLICATED,
            "UploadProgress": UPLOAD_PROGRESS,
            "UploadList": {"type": "object", "required": ["uploads"], "properties": {
                "uploads": {"type": "array", "items": {"$ref": "#/components/schemas/UploadProgress"}}}},
            "DeletedBySlug": {"type": "object", "required": ["deleted", "id"], "properties": {
                "deleted": {"type": "boolean"}, "id": {"type": "string"}}},
            "CheveretoUpload": {"type": "object", "required": ["status_code", "image", "status_txt"], "properties": {
                "status_code": {"type": "integer"}, "status_txt": {"type": "string"},
                "success": {"type": "object", "properties": {"message": {"type": "string"},
                                                             "code": {"type": "integer"}}},
                "image": {"type": "object", "description": "Chevereto's image object (url, url_viewer, thumb, "
                                                           "medium, delete_url, ...) and our deduplicated, "
                                                           "visibility and note",
                          "properties": {"deduplicated": DEDUPLICATED, "note": NOTE,
                                         "visibility": {"type": "string", "enum": ["public", "private"]}}},
                "data": {"type": "object", "description": "the same as image, for ImgBB clients"}}},
            "CheveretoError": {"type": "object", "required": ["status_code", "error", "status_txt"], "properties": {
                "status_code": {"type": "integer"}, "status_txt": {"type": "string"},
                "error": {"type": "object", "properties": {"message": {"type": "string"},
                                                           "code": {"type": "string"}}}}},
            "Me": {"type": "object", "properties": {
                "id": {"type": "string"}, "name": {"type": "string"}, "role": {"type": "string"},
                "via": {"type": "string"}}},
        },
    },
}
