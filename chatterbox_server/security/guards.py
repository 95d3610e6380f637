"""The app's request guards, in order: Host, Origin, API key, concurrent streams per key.

Also answers who the caller is, for what only some callers may see: other requests' text
previews (/v1/status) and the workers' PIDs and last errors (/health).
"""
from __future__ import annotations

import ipaddress
import os

from flask import Flask, Response, current_app, g, request

from chatterbox_server.errors import ApiError
from chatterbox_server.progress import REQUEST_OWNER
from chatterbox_server.security.keys import ApiKeys
from chatterbox_server.security.origin import allowed_host_names, cross_site, host_allowed
from chatterbox_server.security.stream_limits import StreamLimits, TooManyStreams
from chatterbox_server.settings import Settings

OPEN_PATHS = ("/health", "/api/v1/health")     # load balancers probe these without a key
OPEN_BLUEPRINTS = ("web", "docs")              # the web app and the API docs: pages that hold no data
KEYS = "chatterbox.keys"
SYNTHESIS_RULES = ("/api/v1/tts", "/api/v1/vc", "/api/v1/concat/mixed")     # mixed: its tts segments


def init_app(app: Flask, settings: Settings, run_dir: str) -> None:
    keys = ApiKeys.load(settings.api_key, settings.api_keys_file)
    app.extensions[KEYS] = keys
    hosts = allowed_host_names(settings.allowed_hosts, settings.bind_addresses, settings.trust_proxy > 0)
    origins = tuple(part.strip() for part in settings.cors_origins.split(",") if part.strip())
    limits = StreamLimits(os.path.join(run_dir, "streams"), settings.max_streams_per_key)

    @app.before_request
    def guard() -> None:
        if not host_allowed(request.host, hosts):
            raise ApiError(403, f"this server does not answer to the host name {request.host!r}; see "
                                "CHATTERBOX_ALLOWED_HOSTS", code="host_not_allowed")
        if cross_site(request.method, request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"),
                      request.host, origins):
            raise ApiError(403, "cross-site requests are refused; add the page's origin to "
                                "CHATTERBOX_CORS_ORIGINS to allow it", code="cross_site_request")
        g.api_key_name = keys.identify(sent_key()) if keys.enabled else None
        REQUEST_OWNER.set(g.api_key_name)
        if keys.enabled and g.api_key_name is None and not open_request():
            raise ApiError(401, "missing or wrong API key: send Authorization: Bearer <key>", code="invalid_api_key")
        if synthesis_request():
            try:
                g.stream_token = limits.acquire(g.api_key_name or f"client {request.remote_addr}")
            except TooManyStreams as exc:
                raise ApiError(429, str(exc), code="rate_limit_exceeded", error_type="requests",
                               retry_after=1) from None

    @app.after_request
    def release_with_response(response: Response) -> Response:
        token = g.pop("stream_token", None)
        if token:
            response.call_on_close(lambda: limits.release(token))     # after the last byte of a stream
        return response

    @app.teardown_request
    def release_on_failure(_: BaseException | None) -> None:
        limits.release(g.pop("stream_token", None))


def open_request() -> bool:
    return request.method == "OPTIONS" or request.path in OPEN_PATHS or request.blueprint in OPEN_BLUEPRINTS


def sent_key() -> str:
    bearer = request.headers.get("Authorization", "")
    return bearer[7:].strip() if bearer[:7].lower() == "bearer " else request.headers.get("X-API-Key", "")


def synthesis_request() -> bool:
    rule = request.url_rule.rule if request.url_rule else ""
    return request.method == "POST" and ("/audio/speech" in rule or rule in SYNTHESIS_RULES)


def caller_name() -> str | None:
    return g.get("api_key_name")


def trusted_caller() -> bool:
    """A caller with a valid key; without keys configured, a caller on this machine."""
    keys: ApiKeys | None = current_app.extensions.get(KEYS)
    if keys is not None and keys.enabled:
        return caller_name() is not None
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return (request.remote_addr or "").startswith("unix")


def can_see_text(owner: str | None) -> bool:
    """Text previews: with keys, only the key that sent the request sees its text."""
    keys: ApiKeys | None = current_app.extensions.get(KEYS)
    if keys is not None and keys.enabled:
        return caller_name() is not None and owner == caller_name()
    return trusted_caller()
