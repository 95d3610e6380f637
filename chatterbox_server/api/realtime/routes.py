"""The WebSocket routes (flask-sock on simple-websocket, on gunicorn's gevent worker).

`realtime_bp` (our protocol) is registered under /v1 and at the root like the rest of the
OpenAI-style family; `vendor_bp` holds the vendors' paths, each at the path its clients build.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, request
from flask_sock import Sock

from chatterbox_server.api.realtime import cartesia, deepgram, elevenlabs, native
from chatterbox_server.api.realtime.cartesia import CartesiaProtocol
from chatterbox_server.api.realtime.channel import POLICY, TRY_AGAIN_LATER, Channel, Translator, WholeFrames
from chatterbox_server.api.realtime.common import new_session, session_error
from chatterbox_server.api.realtime.deepgram import DeepgramProtocol
from chatterbox_server.api.realtime.elevenlabs import ElevenLabsProtocol
from chatterbox_server.api.realtime.native import NativeProtocol
from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.telemetry import REALTIME_SOCKETS
from chatterbox_server.services import services
from chatterbox_server.settings import Settings
from chatterbox_server.synthesis.realtime import SessionError
from workers.engines.base import EngineInfo

realtime_bp = Blueprint("realtime", __name__)
vendor_bp = Blueprint("realtime_vendors", __name__)
sock = Sock()
OVERSIZE_FACTOR = 16        # messages this many times over the limit are not even read (1009)


def server_options(settings: Settings) -> dict[str, Any]:
    """simple-websocket's options (flask-sock reads them from the app's config, `SOCK_SERVER_OPTIONS`):
    the settings' pings and a transport limit well above the message limit, so that an oversized
    message can still be answered with an error event."""
    return {"ping_interval": settings.realtime_ping_interval or None,
            "max_message_size": settings.realtime_max_message_bytes * OVERSIZE_FACTOR}


def whole_frames() -> None:
    """Before the handshake: the socket that simple-websocket writes to sends each frame whole."""
    raw = request.environ.get("gunicorn.socket")
    if raw is not None and not isinstance(raw, WholeFrames):
        request.environ["gunicorn.socket"] = WholeFrames(raw)


for blueprint in (realtime_bp, vendor_bp):
    blueprint.before_request(whole_frames)


def serve(ws: Any, make_translator: Callable[[EngineInfo], Translator],
          error_frames: Callable[[SessionError], list]) -> None:
    """Run one socket: a translator for its protocol over one session; refusals as the protocol's errors
    (`error_frames`: the protocol's error shape, before a translator exists)."""
    svc = services()
    try:
        # the socket's model: ?model= (ours, Deepgram's) or ?model_id= (ElevenLabs'); a context may pick another
        requested = request.args.get("model") or request.args.get("model_id")
        language = request.args.get("language") or request.args.get("language_code")
        info = svc.require_engine(requested, language, vendor_ids=True)
        translator = make_translator(info)
    except (ApiError, SessionError) as exc:
        _refuse(ws, exc, error_frames)
        return
    REALTIME_SOCKETS.labels(type(translator).__name__.removesuffix("Protocol").lower()).inc()
    Channel(ws, lambda emit: new_session(emit, info), translator, svc.settings.realtime_max_message_bytes).serve()


def _refuse(ws: Any, exc: ApiError | SessionError, error_frames: Callable[[SessionError], list]) -> None:
    """A socket that cannot start (no engine yet, bad query): the protocol's error, then 1013 or 1008."""
    error = exc if isinstance(exc, SessionError) else session_error(exc)
    for frame in error_frames(error):
        ws.send(frame)
    ws.close(TRY_AGAIN_LATER if error.status in (429, 503) else POLICY, str(error)[:120])


def query_options() -> dict[str, str]:
    """The URL's query as socket options, less the API key a browser may send there (security/guards.py)."""
    return {name: value for name, value in request.args.items() if name not in ("api_key", "xi_api_key")}


@sock.route("/audio/speech/realtime", bp=realtime_bp)
def realtime(ws: Any) -> None:
    settings = services().settings
    serve(ws, lambda info: NativeProtocol(info, query_options(), settings.realtime_idle_timeout),
          native.error_frames)


@sock.route("/v1/text-to-speech/<voice_id>/stream-input", bp=vendor_bp)
def elevenlabs_stream_input(ws: Any, voice_id: str) -> None:
    serve(ws, lambda info: ElevenLabsProtocol(info, voice_id, dict(request.args), multi=False),
          elevenlabs_errors(False))


@sock.route("/v1/text-to-speech/<voice_id>/multi-stream-input", bp=vendor_bp)
def elevenlabs_multi_stream_input(ws: Any, voice_id: str) -> None:
    serve(ws, lambda info: ElevenLabsProtocol(info, voice_id, dict(request.args), multi=True),
          elevenlabs_errors(True))


@sock.route("/tts/websocket", bp=vendor_bp)
def cartesia_websocket(ws: Any) -> None:
    settings = services().settings
    serve(ws, lambda info: CartesiaProtocol(info, settings.realtime_idle_timeout), cartesia.error_frames)


@sock.route("/v1/speak", bp=vendor_bp)
def deepgram_speak(ws: Any) -> None:
    settings = services().settings
    serve(ws, lambda info: DeepgramProtocol(info, dict(request.args), settings.realtime_idle_timeout),
          deepgram.error_frames)


def elevenlabs_errors(multi: bool) -> Callable[[SessionError], list]:
    return lambda error: elevenlabs.error_frames(error, multi)
