"""The WebSocket routes (flask-sock on simple-websocket, on gunicorn's gevent worker).

`realtime_bp` (our protocol) is registered under /v1 and at the root like the rest of the
OpenAI-style family; `vendor_bp` holds the vendors' paths, each at the path its clients build.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, request
from flask_sock import Sock

from chatterbox_server.api.realtime.channel import TOO_BIG, Channel, Translator, WholeFrames
from chatterbox_server.api.realtime.common import new_session
from chatterbox_server.api.realtime.native import NativeProtocol
from chatterbox_server.errors import ApiError
from chatterbox_server.services import services
from chatterbox_server.synthesis.realtime import SessionError
from workers.engines.base import EngineInfo

realtime_bp = Blueprint("realtime", __name__)
sock = Sock()
OVERSIZE_FACTOR = 16        # messages this many times over the limit are not even read (1009)
WEBSOCKET_PATHS = ("/audio/speech/realtime",)


def server_options() -> dict[str, Any]:
    settings = services().settings
    return {"ping_interval": settings.realtime_ping_interval or None,
            "max_message_size": settings.realtime_max_message_bytes * OVERSIZE_FACTOR}


def prepare_socket() -> None:
    """Before the handshake: whole-frame writes, and the server options from the settings."""
    environ = request.environ
    raw = environ.get("gunicorn.socket")
    if raw is not None and not isinstance(raw, WholeFrames):
        environ["gunicorn.socket"] = WholeFrames(raw)
    current_app.config["SOCK_SERVER_OPTIONS"] = server_options()


realtime_bp.before_request(prepare_socket)


def serve(ws: Any, make_translator: Callable[[EngineInfo], Translator]) -> None:
    """Run one socket: a translator for its protocol over one session; refusals as the protocol's errors."""
    svc = services()
    try:
        info = svc.require_engine()
        translator = make_translator(info)
    except (ApiError, SessionError) as exc:
        _refuse(ws, make_translator, exc)
        return
    Channel(ws, new_session, translator, svc.settings.realtime_max_message_bytes).serve()


def _refuse(ws: Any, make_translator: Callable[[EngineInfo], Translator], exc: Exception) -> None:
    from chatterbox_server.api.realtime.channel import POLICY, TRY_AGAIN_LATER, dumps
    status = getattr(exc, "status", 400)
    message = getattr(exc, "message", None) or str(exc)
    body = {"type": "error", "error": {"message": message, "code": getattr(exc, "code", None) or "invalid_value",
                                       "param": getattr(exc, "param", None), "status": status}}
    ws.send(dumps(body))
    ws.close(TRY_AGAIN_LATER if status in (429, 503) else POLICY, message[:120])


@sock.route("/audio/speech/realtime", bp=realtime_bp)
def realtime(ws: Any) -> None:
    settings = services().settings
    serve(ws, lambda info: NativeProtocol(info, dict(request.args), settings.realtime_idle_timeout))


__all__ = ["TOO_BIG", "realtime_bp", "sock"]
