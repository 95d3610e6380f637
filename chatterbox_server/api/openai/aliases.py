"""Every alias path of the OpenAI-style peer (travisvn/chatterbox-tts-api's app/core/aliases.py).

Our blueprints already answer at the root and under /v1, which covers most of its table; the
remaining names are rewritten to the path they stand for before routing, so an alias always
behaves exactly like its primary path (every method, every future endpoint under it).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

# alias (regex over the whole path) -> primary path template; {name} segments carry over
REWRITES: tuple[tuple[str, str], ...] = (
    ("/tts", "/v1/audio/speech"),
    ("/tts/upload", "/v1/audio/speech/upload"),
    ("/tts/stream", "/v1/audio/speech/stream"),
    ("/tts/stream/upload", "/v1/audio/speech/stream/upload"),
    ("/voice-library", "/v1/voices"),
    ("/voice_library", "/v1/voices"),
    ("/default-voice", "/v1/voices/default"),
    ("/v1/health", "/health"),
    ("/routes", "/v1/endpoints"),
    ("/processing", "/v1/status"),
    ("/processing/status", "/v1/status"),
    ("/progress", "/v1/status/progress"),
    ("/history", "/v1/status/history"),
    ("/stats", "/v1/status/statistics"),
    ("/api/info", "/v1/info"),
)

# the peer's table, primary -> aliases, as /endpoints reports it (every primary also answers under /v1)
PEER_TABLE: dict[str, list[str]] = {
    "/audio/speech": ["/v1/audio/speech", "/tts"],
    "/audio/speech/upload": ["/v1/audio/speech/upload", "/tts/upload"],
    "/audio/speech/stream": ["/v1/audio/speech/stream", "/tts/stream"],
    "/audio/speech/stream/upload": ["/v1/audio/speech/stream/upload", "/tts/stream/upload"],
    "/voices": ["/v1/voices", "/voice-library", "/voice_library"],
    "/voices/default": ["/v1/voices/default", "/default-voice"],
    "/voices/{voice_name}": ["/v1/voices/{voice_name}"],
    "/voices/{voice_name}/download": ["/v1/voices/{voice_name}/download"],
    "/voices/{voice_name}/aliases": ["/v1/voices/{voice_name}/aliases"],
    "/voices/{voice_name}/aliases/{alias}": ["/v1/voices/{voice_name}/aliases/{alias}"],
    "/voices/all-names": ["/v1/voices/all-names"],
    "/voices/cleanup": ["/v1/voices/cleanup"],
    "/health": ["/v1/health"],
    "/models": ["/v1/models"],
    "/config": ["/v1/config"],
    "/endpoints": ["/v1/endpoints", "/routes"],
    "/memory": ["/v1/memory"],
    "/memory/config": ["/v1/memory/config"],
    "/memory/reset": ["/v1/memory/reset"],
    "/memory/recommendations": ["/v1/memory/recommendations"],
    "/status": ["/v1/status", "/processing", "/processing/status"],
    "/status/progress": ["/v1/status/progress", "/progress"],
    "/status/history": ["/v1/status/history", "/history"],
    "/status/statistics": ["/v1/status/statistics", "/stats"],
    "/status/history/clear": ["/v1/status/history/clear"],
    "/info": ["/v1/info", "/api/info"],
    "/languages": ["/v1/languages"],
    "/ping": ["/v1/ping"],
    "/audio/speech/long": ["/v1/audio/speech/long"],
    "/audio/speech/long/jobs": ["/v1/audio/speech/long/jobs"],
    "/audio/speech/long/jobs/{job_id}": ["/v1/audio/speech/long/jobs/{job_id}"],
    "/audio/speech/long/{job_id}/download": ["/v1/audio/speech/long/{job_id}/download"],
    "/audio/speech/long/{job_id}/pause": ["/v1/audio/speech/long/{job_id}/pause"],
    "/audio/speech/long/{job_id}/resume": ["/v1/audio/speech/long/{job_id}/resume"],
    "/audio/speech/long/{job_id}/sse": ["/v1/audio/speech/long/{job_id}/sse"],
    "/audio/speech/long/{job_id}": ["/v1/audio/speech/long/{job_id}"],
    "/audio/speech/long-history": ["/v1/audio/speech/long-history"],
    "/audio/speech/long-history/stats": ["/v1/audio/speech/long-history/stats"],
    "/audio/speech/long/{job_id}/details": ["/v1/audio/speech/long/{job_id}/details"],
    "/audio/speech/long/{job_id}/retry": ["/v1/audio/speech/long/{job_id}/retry"],
    "/audio/speech/long/bulk": ["/v1/audio/speech/long/bulk"],
    "/audio/speech/long/history": ["/v1/audio/speech/long/history"],
}


def compile_rewrites(rewrites: Iterable[tuple[str, str]] = REWRITES) -> dict[str, str]:
    return {alias.rstrip("/") or "/": primary for alias, primary in rewrites}


def rewrite(path: str, table: dict[str, str]) -> str:
    """The primary path for `path` (itself when it is no alias); a trailing slash is ignored."""
    return table.get(path.rstrip("/") or "/", path)


def endpoint_info() -> dict[str, Any]:
    return {"total_endpoints": len(PEER_TABLE), "total_aliases": sum(len(a) for a in PEER_TABLE.values()),
            "mappings": {primary: {"primary": primary, "aliases": aliases, "total_paths": 1 + len(aliases)}
                         for primary, aliases in PEER_TABLE.items()}}


_DOUBLE_SLASH = re.compile(r"/{2,}")


class AliasMiddleware:
    """WSGI middleware: rewrites PATH_INFO of an alias to its primary path before Flask routes it."""

    def __init__(self, app: Callable, rewrites: Iterable[tuple[str, str]] = REWRITES) -> None:
        self.app = app
        self.table = compile_rewrites(rewrites)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        primary = rewrite(_DOUBLE_SLASH.sub("/", path), self.table)
        if primary != path and primary in self.table.values():
            environ["PATH_INFO"] = primary
        return self.app(environ, start_response)
