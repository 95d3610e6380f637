"""The web app at `/`: one page and its static files, all shipped inside the package (no CDN, no build).

The page and its assets are public (they hold no data); every API call the page makes sends the
key the user typed, so CHATTERBOX_API_KEY protects the data exactly as it does for other clients.
"""
from __future__ import annotations

from flask import Blueprint, Response, current_app, render_template

bp = Blueprint("web", __name__, static_folder="static", static_url_path="/web", template_folder="templates")
# The browser itself refuses anything from another origin on our pages (ReDoc's footer logo, for one,
# points at a CDN): offline or not, a page never reaches out. Blob URLs carry fetched audio and
# ReDoc's search worker; Swagger UI and ReDoc set inline styles.
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
                           "style-src 'self' 'unsafe-inline'; script-src 'self'; worker-src 'self' blob:; "
                           "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'")


def same_origin_only(response: Response) -> Response:
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


bp.after_request(same_origin_only)


@bp.get("/")
def index() -> Response:
    settings = current_app.config["SETTINGS"]
    page = render_template("web/index.html", limits={
        "max_input_chars": settings.max_input_chars,
        "max_stream_input_chars": settings.max_stream_input_chars,
        "max_upload_bytes": settings.max_upload_bytes,
        "max_longtext_chars": settings.longtext_max_chars,
        "auth_required": bool(settings.api_key),
    })
    response = Response(page, mimetype="text/html")
    response.headers["Cache-Control"] = "no-cache"
    return response
