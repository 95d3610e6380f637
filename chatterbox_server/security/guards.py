"""The app's request guards, in order: Host, Origin, API key, concurrent streams per key.

Also answers who the caller is, for what only some callers may see: other requests' text
previews (/v1/status) and the workers' PIDs and last errors (/health), and which workspace the
caller works in. With keys, every key has its own workspace, named by the key's name: history,
outputs, long jobs, VC inputs and voices carry their owner, a key sees and acts on its own only,
and an admin key (`name:key admin` in the keys file) on all. Without keys the server is one
workspace, as it always was.
"""
from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable

from flask import Flask, Response, current_app, g, request

from chatterbox_server.errors import ApiError
from chatterbox_server.security.keys import REQUEST_OWNER, ApiKeys
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
    hosts = allowed_host_names(settings.allowed_hosts, settings.bind_addresses, settings.trust_proxy > 0,
                               keys.enabled)
    origins = tuple(part.strip() for part in settings.cors_origins.split(",") if part.strip())
    limits = StreamLimits(os.path.join(run_dir, "streams"), settings.max_streams_per_key)

    @app.before_request
    def guard() -> None:
        if not host_allowed(request.host, hosts):
            raise ApiError(403, f"this server does not answer to the host name {request.host!r}; see "
                                "CHATTERBOX_ALLOWED_HOSTS", code="host_not_allowed")
        # a WebSocket handshake is a GET, but what it opens changes state like a POST (cross-site hijacking)
        method = "POST" if websocket_request() else request.method
        if cross_site(method, request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"),
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
        if token and websocket_request():
            limits.release(token)       # the socket's whole life ran inside the view, which has returned
        elif token:
            response.call_on_close(lambda: limits.release(token))     # after the last byte of a stream
        return response

    @app.teardown_request
    def release_on_failure(_: BaseException | None) -> None:
        limits.release(g.pop("stream_token", None))


def open_request() -> bool:
    return request.method == "OPTIONS" or request.path in OPEN_PATHS or request.blueprint in OPEN_BLUEPRINTS


def sent_key() -> str:
    """The key as the OpenAI SDK (Bearer), Deepgram (Token), ElevenLabs (xi-api-key) or Cartesia
    (X-API-Key) send it; a WebSocket handshake may also carry it as `api_key` (or ElevenLabs'
    `xi_api_key`) in the query, since browsers cannot set a socket's headers."""
    authorization = request.headers.get("Authorization", "")
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() in ("bearer", "token") and credential.strip():
        return credential.strip()
    for header in ("X-API-Key", "xi-api-key"):
        if request.headers.get(header):
            return request.headers[header]
    if websocket_request():
        return request.args.get("api_key") or request.args.get("xi_api_key") or ""
    return ""


def websocket_request() -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def synthesis_request() -> bool:
    rule = request.url_rule.rule if request.url_rule else ""
    if websocket_request():
        return True         # every socket route synthesizes; the whole socket counts as one stream
    return request.method == "POST" and ("/audio/speech" in rule or rule in SYNTHESIS_RULES)


def caller_name() -> str | None:
    return g.get("api_key_name")


def _keys() -> ApiKeys | None:
    return current_app.extensions.get(KEYS)


def keys_enabled() -> bool:
    keys = _keys()
    return keys is not None and keys.enabled


def sees_all() -> bool:
    """Whether the caller acts on every workspace: no keys configured (one workspace) or an admin key."""
    keys = _keys()
    return keys is None or not keys.enabled or keys.is_admin(caller_name())


def scope() -> str | None:
    """The workspace the stores restrict this caller to: None for every one (see sees_all), else
    the key's name. Things made before keys were configured (no owner) are then an admin's only."""
    return None if sees_all() else caller_name()


def workspace() -> str | None:
    """The owner recorded on what this request creates: the key's name; None without keys."""
    return caller_name() if keys_enabled() else None


def owns(owner: str | None) -> bool:
    """Whether the caller may see and act on a thing owned by `owner`."""
    return sees_all() or (owner is not None and owner == caller_name())


def owner_check() -> Callable[[str | None], bool]:
    """`owns` as a plain function that needs no request context (for work done off the hub)."""
    every, caller = sees_all(), caller_name()
    return lambda owner: every or (owner is not None and owner == caller)


def owner_check_for(keys: ApiKeys | None, name: str | None) -> Callable[[str | None], bool]:
    """`owns` for work done on behalf of the key `name` outside any request (a long job's runner
    acts as the job's owner). A thing with no owner (made without keys or before workspaces) was
    checked when it was made, so it acts on every workspace, like an admin key."""
    every = keys is None or not keys.enabled or name is None or keys.is_admin(name)
    return lambda owner: every or (owner is not None and owner == name)


def admin_caller() -> bool:
    """PIDs, the machine's memory and error texts: an admin key; without keys, a caller on this machine."""
    keys = _keys()
    if keys is not None and keys.enabled:
        return keys.is_admin(caller_name())
    return trusted_caller()


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
    """Text previews: with keys, only the key that sent the request (and an admin key) sees its text."""
    if keys_enabled():
        return caller_name() is not None and owns(owner)
    return trusted_caller()
