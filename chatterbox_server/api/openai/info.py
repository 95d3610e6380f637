"""Information endpoints of the OpenAI-style family: /config, /info, /languages, /endpoints, /ping."""
from __future__ import annotations

import platform
import sys
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from chatterbox_server import __version__
from chatterbox_server.api.openai import aliases
from chatterbox_server.api.openai.memory import process_memory
from chatterbox_server.api.openai.status import current_statistics, history_records, processing_status
from chatterbox_server.services import services
from chatterbox_server.text.markup import EXPRESSIVE_TAGS, MAX_PAUSE_SECONDS
from workers.engines.base import EngineInfo
from workers.engines.tags import TURBO_DELIVERY_TAGS, TURBO_SOUND_TAGS

bp = Blueprint("info", __name__)
API_NAME = "chatterbox-server"
LANGUAGE_NAMES = {
    "ar": "Arabic", "da": "Danish", "de": "German", "el": "Greek", "en": "English", "es": "Spanish",
    "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi", "it": "Italian", "ja": "Japanese",
    "ko": "Korean", "ms": "Malay", "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese",
    "ru": "Russian", "sv": "Swedish", "sw": "Swahili", "tr": "Turkish", "zh": "Chinese"}


def version_info() -> dict[str, Any]:
    return {"name": API_NAME, "version": __version__, "api_version": __version__,
            "description": "OpenAI-compatible text-to-speech server for the Chatterbox models",
            "license": "MIT", "author": "chatterbox-server developers",
            "python_version": sys.version.split()[0], "platform": platform.platform()}


@bp.get("/ping")
def ping() -> Response:
    return jsonify({"status": "ok", "message": "Server is running"})


@bp.get("/config")
def config() -> Response:
    settings = services().settings
    info = services().engine_info()
    addresses = settings.bind_addresses
    host, _, port = addresses[0].rpartition(":") if addresses else ("", "", "")
    return jsonify({
        "api_info": version_info(),
        "server": {"host": host, "port": int(port) if port.isdigit() else port, "bind": addresses,
                   "front_workers": settings.front_workers, "model_workers": settings.model_workers},
        "model": {"engine": info.engine if info else settings.engine, "model": info.model if info else settings.model,
                  "device": info.device if info else "unknown", "sample_rate": info.sample_rate if info else None,
                  "voice_sample_path": None, "model_cache_dir": settings.checkpoint_dir or None},
        "defaults": {"exaggeration": 0.5, "cfg_weight": 0.5, "temperature": 0.8, "speed": 1.0,
                     "response_format": "wav", "max_chunk_length": 500, "max_total_length": settings.max_input_chars,
                     "max_stream_length": settings.max_stream_input_chars,
                     "max_long_text_length": settings.longtext_max_chars},
        "memory_management": {"memory_cleanup_interval": 1, "cuda_cache_clear_interval": 1,
                              "enable_memory_monitoring": True},
        "long_text": {"max_running": settings.longtext_max_running, "max_active": settings.longtext_max_active,
                      "retention_seconds": settings.longtext_retention_seconds,
                      "lease_seconds": settings.longtext_lease_seconds,
                      "database": "postgresql" if settings.database_url else "sqlite"},
    })


@bp.get("/info")
def api_info() -> Response:
    versions = version_info()
    stats = current_statistics()
    status = processing_status()
    return jsonify({"api_name": versions["name"], "version": versions["version"],
                    "api_version": versions["api_version"], "description": versions["description"],
                    "status": "operational" if services().engine_info() else "loading",
                    "version_info": versions, "tts_status": status, "statistics": stats,
                    "memory_info": process_memory(), "recent_requests": history_records(3),
                    "uptime_info": {"total_requests": stats["total_requests"], "success_rate": stats["success_rate"],
                                    "is_processing": status["is_processing"]},
                    "markup": markup_info(services().engine_info())})


def markup_info(info: EngineInfo | None) -> dict[str, Any]:
    """What a text may hold besides words (text/markup.py, text/speakers.py), and which expressive tags
    the live engine performs: the others are dropped before synthesis and named in
    X-Chatterbox-Dropped-Tags; a bracketed lowercase word that is no tag is a 400 listing these."""
    understood = set(info.tags) if info else set()
    kinds = {tag: "sound" for tag in TURBO_SOUND_TAGS} | {tag: "delivery" for tag in TURBO_DELIVERY_TAGS}
    return {
        "expressive_tags": [{"tag": f"[{name}]", "kind": kinds.get(name, "sound"), "description": description,
                             "understood": name in understood} for name, description in EXPRESSIVE_TAGS.items()],
        "pauses": {"syntax": "[pause:500ms] or [pause:1.5s]", "max_seconds": MAX_PAUSE_SECONDS},
        "ssml": ["speak", "break time", "break strength", "p", "s", "prosody rate"],
        "speakers": ["[S1]", "[SPEAKER0]", "Speaker 1:", "[voice:NAME]"],
    }


@bp.get("/languages")
def languages() -> Response:
    info = services().engine_info()
    codes = list(info.languages) if info and info.languages else ["en"]
    return jsonify({"languages": [{"code": c, "name": LANGUAGE_NAMES.get(c, c)} for c in codes],
                    "count": len(codes), "model_type": "multilingual" if len(codes) > 1 else "standard"})


@bp.get("/endpoints")
def endpoints() -> Response:
    routes = sorted({(rule.rule, ",".join(sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})))
                     for rule in current_app.url_map.iter_rules() if rule.endpoint != "static"})
    return jsonify({**aliases.endpoint_info(),
                    "description": "Every path answers at the root and under /v1; aliases answer like their primary",
                    "usage": {"primary_endpoints": "Clean, short paths", "v1_aliases": "OpenAI-compatible paths",
                              "example": {"primary": "/audio/speech", "aliases": ["/v1/audio/speech", "/tts"],
                                          "note": "Both paths work identically"}},
                    "routes": [{"path": path, "methods": methods.split(",")} for path, methods in routes]})
