"""The front worker's side of the speech-recognition process (workers/asr_worker.py).

One connection per request, waited on through the gevent hub exactly like a model-worker job
(pool_client.connect), so a long transcription never blocks the other greenlets.
"""
from __future__ import annotations

import gevent

from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.pool_client import CooperativeConnection, connect
from workers.ipc.asr import AsrStatus, Probe, Status, Transcribe, TranscribeFailed, Transcript, socket_path

TRANSCRIBE_TIMEOUT = 600.0      # a first use may load (or download) the model
BUSY = "whisper_busy"


class AsrClient:
    def __init__(self, run_dir: str) -> None:
        self.path = socket_path(run_dir)
        self.conn: CooperativeConnection | None = None

    def __enter__(self) -> AsrClient:
        self.open()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def open(self) -> None:
        try:
            self.conn = connect(self.path)
        except OSError as exc:
            raise ApiError(503, f"the speech-recognition process is not running ({exc}); "
                                "send bypass_whisper_checking=true or retry shortly",
                           code="whisper_unavailable", retry_after=5) from None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def probe(self, model: str) -> Transcript:
        """Load the model (once per process) or raise ApiError 503 saying why it cannot run."""
        return self._ask(Probe(model))

    def status(self, model: str, timeout: float) -> AsrStatus:
        """What can run, without loading anything (OSError or gevent.Timeout when it cannot say)."""
        assert self.conn is not None
        with gevent.Timeout(timeout):
            self.conn.send(Status(model))
            reply = self.conn.recv()
        if not isinstance(reply, AsrStatus):
            raise OSError(f"unexpected reply {type(reply).__name__}")
        return reply

    def transcribe(self, model: str, pcm: bytes, sample_rate: int, language: str | None,
                   wait: float | None = None) -> Transcript:
        """ApiError 503 code `whisper_busy` when no slot frees within `wait` seconds (other requests hold
        every one): nothing failed, the caller serves the request without the check."""
        return self._ask(Transcribe(model, pcm, sample_rate, language, wait))

    def _ask(self, message: object) -> Transcript:
        assert self.conn is not None
        try:
            with gevent.Timeout(TRANSCRIBE_TIMEOUT):
                self.conn.send(message)
                reply = self.conn.recv()
        except gevent.Timeout:
            raise ApiError(504, f"Whisper took longer than {TRANSCRIBE_TIMEOUT:.0f} s", code="timeout") from None
        except (EOFError, OSError):
            raise ApiError(503, "the speech-recognition process stopped during the check",
                           code="whisper_unavailable", retry_after=5) from None
        if isinstance(reply, TranscribeFailed) and reply.busy:
            raise ApiError(503, reply.message, code=BUSY, retry_after=5)
        if isinstance(reply, TranscribeFailed):
            raise ApiError(reply.status, f"whisper_model_name: {reply.message}", param="whisper_model_name",
                           code="whisper_unavailable")
        return reply
