"""The speech-recognition process: Whisper (faster-whisper) for the Extended API's candidate check.

Front workers never load Whisper (it would stall their gevent hub and cost each of them the
model's memory). One spawned process owns it, titled ``chatterbox-asr-worker``, and serves
transcription requests on a Unix socket in the pool's run directory with the same framing as the
model workers (``multiprocessing.connection``); a thread per connection (one per request). Models
load on first use, once per model under a lock, and stay cached by name. Transcriptions of different
requests run at once up to CHATTERBOX_WHISPER_CONCURRENCY (the model is built with as many
CTranslate2 workers, so concurrent calls really run in parallel); a transcription that cannot start
within its request's wait is answered Busy at once, and that request is served without the check,
so one client's many takes cannot hold every other client's check. It exits when its owner closes
the lifeline.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from multiprocessing.connection import Connection, Listener, wait

import numpy as np

from chatterbox_server.settings import Settings
from workers.ipc.asr import AsrStatus, Probe, Status, Transcribe, TranscribeFailed, Transcript, socket_path

log = logging.getLogger("chatterbox.asr")
PROCESS_TITLE = "chatterbox-asr-worker"
WHISPER_RATE = 16000
RESPAWN_PAUSE_SECONDS = 1.0
FAILURE_MEMORY_SECONDS = 60.0


# -- the models -----------------------------------------------------------------------------------
def resolve_model(name: str, model_dir: str) -> str:
    """The model to load for `name`: `<dir>/<name>` when the local directory has it, `<dir>` itself
    when it holds one model (model.bin) that serves every name, else the hub name."""
    if not model_dir:
        return name
    for candidate in (os.path.join(model_dir, name), model_dir):
        if os.path.isfile(os.path.join(candidate, "model.bin")):
            return candidate
    raise FileNotFoundError(f"CHATTERBOX_WHISPER_MODEL_DIR={model_dir} holds no model.bin for {name!r}")


def to_whisper_audio(pcm: bytes, sample_rate: int) -> np.ndarray:
    """PCM16 mono at any rate -> float32 at 16 kHz, resampled by FFmpeg (PyAV)."""
    samples = np.frombuffer(pcm, dtype="<i2")
    if sample_rate == WHISPER_RATE or samples.size == 0:
        return samples.astype(np.float32) / 32768.0
    import av
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).copy(), format="s16", layout="mono")
    frame.sample_rate = sample_rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=WHISPER_RATE)
    frames = resampler.resample(frame) + resampler.resample(None)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32)


def token_budget(samples: int) -> int:
    """Tokens Whisper may write per 30 s window: speech runs at about 3 tokens a second, so a take
    that makes it loop on nonsense stops soon instead of writing its full 448 tokens."""
    seconds = min(samples / WHISPER_RATE, 30.0)
    return int(min(440, 8 * seconds + 16))


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import ctranslate2
        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:  # noqa: BLE001 - no CTranslate2 (or no driver): nothing loads on CUDA either
        return "cpu"


def default_concurrency(device: str, cpus: int | None = None) -> int:
    """CHATTERBOX_WHISPER_CONCURRENCY=0: on CUDA 4 transcriptions at once (small models use little of a
    GPU, and a take is short); on CPU 2, never more than the cores (each gets its share of them)."""
    if device.startswith("cuda"):
        return 4
    return max(1, min(2, cpus if cpus is not None else (os.cpu_count() or 1)))


class Recognizer:
    def __init__(self, model_dir: str, device: str, concurrency: int = 1) -> None:
        self.model_dir = model_dir
        self.device = resolve_device(device)
        self.concurrency = concurrency if concurrency > 0 else default_concurrency(self.device)
        self.models: dict[str, object] = {}
        self.failures: dict[str, tuple[float, str]] = {}
        self.load_lock = threading.Lock()          # one load at a time, and each model loaded once
        self.slots = threading.BoundedSemaphore(self.concurrency)
        self.running = 0
        self.counting = threading.Lock()

    def probe(self, request: Probe) -> Transcript:
        path = resolve_model(request.model, self.model_dir)
        self._model(path)
        return Transcript("", path)

    def status(self, request: Status) -> AsrStatus:
        now = time.monotonic()
        failed = tuple((path, why) for path, (when, why) in list(self.failures.items())
                       if now - when < FAILURE_MEMORY_SECONDS)
        return AsrStatus(tuple(self.models), failed, self._local(request.model), _hub_offline(),
                         self.concurrency, self.running)

    def _local(self, name: str) -> str | None:
        try:
            path = resolve_model(name, self.model_dir)
        except FileNotFoundError:
            return None
        if os.path.isdir(path):
            return path
        try:
            from faster_whisper.utils import download_model
            return download_model(path, local_files_only=True)
        except Exception:  # noqa: BLE001 - not in the cache (or no faster-whisper): nothing local
            return None

    def transcribe(self, request: Transcribe) -> Transcript | TranscribeFailed:
        path = resolve_model(request.model, self.model_dir)
        model = self._model(path)
        audio = to_whisper_audio(request.pcm, request.sample_rate)        # before taking a slot
        if not self.slots.acquire(timeout=request.wait if request.wait is None else max(0.0, request.wait)):
            return TranscribeFailed(f"Whisper is busy: {self.concurrency} transcriptions of other requests "
                                    f"kept it for over {request.wait:g} s (CHATTERBOX_WHISPER_WAIT_SECONDS)",
                                    503, busy=True)
        try:
            with self.counting:
                self.running += 1
            language = request.language if model.model.is_multilingual else "en"
            segments, _ = model.transcribe(audio, language=language, beam_size=2, temperature=0.0,
                                           condition_on_previous_text=False, without_timestamps=True,
                                           vad_filter=False, max_new_tokens=token_budget(audio.size))
            text = " ".join(segment.text.strip() for segment in segments).strip()
        finally:
            with self.counting:
                self.running -= 1
            self.slots.release()
        return Transcript(text, path)

    def _model(self, path: str) -> object:
        """The loaded model, loaded once however many requests ask at once; a model that failed to
        load is not retried for FAILURE_MEMORY_SECONDS (an offline hub would otherwise be asked
        again by every request)."""
        model = self.models.get(path)
        if model is not None:
            return model
        with self.load_lock:
            if path in self.models:
                return self.models[path]
            failed = self.failures.get(path)
            if failed and time.monotonic() - failed[0] < FAILURE_MEMORY_SECONDS:
                raise RuntimeError(failed[1])
            try:
                return self._load(path)
            except Exception as exc:
                self.failures[path] = (time.monotonic(), f"{type(exc).__name__}: {exc}")
                raise

    def _load(self, path: str) -> object:
        from faster_whisper import WhisperModel
        device = self.device
        compute = "int8" if device == "cpu" else "float16"
        # each of the concurrent transcriptions gets its share of at most 4 cores (more only slows it)
        threads = max(1, min(4, (os.cpu_count() or 1) // self.concurrency))
        log.info("loading Whisper model %s on %s (%s, %d at once)", path, device, compute, self.concurrency)
        model = WhisperModel(path, device=device, compute_type=compute, cpu_threads=threads,
                             num_workers=self.concurrency)
        self.models[path] = model
        return model


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# -- the process ----------------------------------------------------------------------------------
def serve_connection(conn: Connection, recognizer: Recognizer) -> None:
    try:
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):
                return
            if isinstance(request, Status):
                conn.send(recognizer.status(request))
                continue
            if not isinstance(request, (Transcribe, Probe)):
                conn.send(TranscribeFailed("not a transcription request", 400))
                continue
            try:
                reply: object = (recognizer.transcribe(request) if isinstance(request, Transcribe)
                                 else recognizer.probe(request))
            except FileNotFoundError as exc:
                reply = TranscribeFailed(str(exc), 503)
            except Exception as exc:  # noqa: BLE001 - the model's own failures go back to the caller
                log.warning("Whisper %r failed: %s: %s", request.model, type(exc).__name__, exc)
                reply = TranscribeFailed(f"Whisper {request.model!r} cannot run here: {exc}", 503)
            conn.send(reply)
    except (BrokenPipeError, ConnectionResetError):
        pass            # the front worker went away: it stopped, or stopped waiting (a bounded status read)
    finally:
        conn.close()


def run(settings: Settings, run_dir: str, lifeline: Connection) -> None:
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    try:
        import setproctitle
        setproctitle.setproctitle(PROCESS_TITLE)
    except ImportError:
        pass
    path = socket_path(run_dir)
    if os.path.exists(path):
        os.unlink(path)
    listener = Listener(path, family="AF_UNIX")
    os.chmod(path, 0o600)
    recognizer = Recognizer(settings.whisper_model_dir, settings.whisper_device, settings.whisper_concurrency)
    threading.Thread(target=_accept_forever, args=(listener, recognizer), daemon=True).start()
    try:
        wait([lifeline])          # the owner said stop, or died: either way the lifeline is readable
    finally:
        listener.close()


def _accept_forever(listener: Listener, recognizer: Recognizer) -> None:
    while True:
        try:
            conn = listener.accept()
        except OSError:
            return
        threading.Thread(target=serve_connection, args=(conn, recognizer), daemon=True).start()


class AsrProcess:
    """The owner's handle (the gunicorn master, or the app outside gunicorn): start, watch, stop."""

    def __init__(self, settings: Settings, run_dir: str) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self.process: multiprocessing.process.BaseProcess | None = None
        self.lifeline: Connection | None = None
        self.stopping = threading.Event()
        self.watchdog: threading.Thread | None = None

    def start(self) -> None:
        self._spawn()
        self.watchdog = threading.Thread(target=self._watch, name="asr-watchdog", daemon=True)
        self.watchdog.start()

    def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(target=run, name="asr-worker", args=(self.settings, self.run_dir, theirs))
        process.start()
        theirs.close()
        self.process, self.lifeline = process, ours

    def _watch(self) -> None:
        while not self.stopping.is_set():
            if not wait([self.process.sentinel], 1.0) or self.stopping.is_set():
                continue
            log.error("the speech-recognition process (pid %d) died; starting a new one", self.process.pid)
            self.lifeline.close()
            self._spawn()
            self.stopping.wait(RESPAWN_PAUSE_SECONDS)

    def forget_in_child(self) -> None:
        if self.lifeline is not None:
            self.lifeline.close()
            self.lifeline = None

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        if self.watchdog is not None:
            self.watchdog.join(5)
        if self.process is None:
            return
        if self.lifeline is not None:
            self.lifeline.close()
        if not wait([self.process.sentinel], timeout):
            self.process.kill()
            wait([self.process.sentinel], 5)
        self.process = None
