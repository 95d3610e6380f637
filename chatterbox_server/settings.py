"""Every setting of the server, declared once: name, type, default and documentation.

Settings come from ``CHATTERBOX_*`` environment variables and are read when the app or the
gunicorn config starts, never at import time. This module imports nothing but the standard
library, so the gunicorn master, the front workers and the model workers can all use it.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PREFIX = "CHATTERBOX_"

ENGINES = ("auto", "hibari", "chatterbox", "tone")
CHATTERBOX_MODELS = ("standard", "turbo", "multilingual")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
WHISPER_DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16", "float16")
S3GEN_BATCH = ("auto", "on", "off")


def setting(default: Any, doc: str, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "choices": choices})


@dataclass(frozen=True)
class Settings:
    bind: str = setting(
        "127.0.0.1:4123 127.0.0.1:7860",
        "Addresses gunicorn listens on, separated by spaces or commas (both seed ports by default). "
        "Use `0.0.0.0:4123` to listen on every interface, `unix:/run/x.sock` for a socket.")
    engine: str = setting(
        "auto",
        "Speech engine: `chatterbox` (the real models), `hibari` (small embedded English voice, CPU), "
        "`auto` (Chatterbox when its weights load, else hibari with one log line) or `tone` "
        "(a deterministic test engine that makes tones, for tests only).", ENGINES)
    model: str = setting(
        "standard", "Chatterbox model: `standard`, `turbo` or `multilingual`.", CHATTERBOX_MODELS)
    models: str = setting(
        "", "Models served side by side, comma-separated, the first is the default: `standard`, `turbo`, "
        "`multilingual`, each in its own model workers, optionally `name:workers@device+device` (e.g. "
        "`standard,turbo:2@cuda:1,multilingual@cpu`: 2 turbo workers on cuda:1). Without them an entry takes "
        "CHATTERBOX_MODEL_WORKERS and CHATTERBOX_DEVICE. Empty: the one CHATTERBOX_MODEL names. "
        "CHATTERBOX_ENGINE=hibari serves its one model whatever this says.")
    preload: str = setting(
        "default", "Models loaded at start: `default` (the first of CHATTERBOX_MODELS), `all`, `none`, or a "
        "comma-separated list. The others load on their first request, which waits (its SSE stream and "
        "progress say `loading model`).")
    idle_unload_seconds: float = setting(
        0.0, "Seconds without a request after which a model's workers free its memory. The worker processes "
        "stay, so the next request reloads it quickly (from host memory when it lived on a GPU, else from "
        "disk). 0: never.")
    gpu_memory_budget: str = setting(
        "", "Most memory the loaded models' weights may hold together, e.g. `20GB` or `12000MB` (each "
        "worker's copy counts, on whatever device it lives). Loading one more first unloads the least recently "
        "used idle models; a model with a request in progress is never unloaded, the load waits instead. "
        "Empty: no limit.")
    openai_model_map: str = setting(
        "tts-1=turbo,tts-1-hd=standard,gpt-4o-mini-tts=standard",
        "Which model OpenAI's model names are served by; a name whose model is not served here goes to the "
        "default model.")
    device: str = setting(
        "auto",
        "Where Chatterbox runs: `auto` (CUDA when present), `cpu`, `cuda`, `cuda:N`, or a list "
        "`cuda:0,cuda:1` (one model worker per listed device).")
    checkpoint_dir: str = setting(
        "", "Directory with Chatterbox weights (loaded with `from_local`); empty: the Hugging Face hub.")
    max_new_tokens: int = setting(
        1000, "Hard ceiling on speech tokens generated for one text chunk (25 tokens = 1 s of audio).")
    max_batch: int = setting(
        8, "Requests one model worker advances together (Chatterbox: rows of one batched T3 decode "
        "step); more jobs wait, those without audio yet first. hibari and tone take one chunk per step.")
    stream_tokens: int = setting(
        25, "Chatterbox: speech tokens in the first vocoded window of each text chunk (25 = 1 s of "
        "audio); later windows double up to 8x this. 0: vocode each chunk whole.")
    s3gen_batch: str = setting(
        "auto", "Chatterbox: vocode the token windows of several streams that fall due in the same step with "
        "one S3Gen flow call (HiFiGAN and the watermark stay per stream; the audio is the same). `auto`: on "
        "CUDA only (on CPU it measured no faster, see docs/benchmarks.md); `on`; `off`.", S3GEN_BATCH)
    dtype: str = setting(
        "float32", "Chatterbox T3 weights on CUDA: `float32`, `bfloat16` or `float16` (unmeasured; "
        "CPU always float32).", DTYPES)
    compile: bool = setting(
        False, "Chatterbox on CUDA: `torch.compile` the T3 decode step (unmeasured; slow first steps).")
    model_workers: int = setting(
        1, "Model-worker processes per device (each owns one engine instance).")
    front_workers: int = setting(2, "gunicorn gevent workers serving HTTP.")
    worker_connections: int = setting(1000, "Simultaneous connections per front worker.")
    max_input_chars: int = setting(4096, "Longest `input` accepted by `/v1/audio/speech` (whole file).")
    max_stream_input_chars: int = setting(
        100_000, "Longest `input` accepted by the streaming endpoints (`/stream`, SSE).")
    max_queued_jobs: int = setting(
        64, "Jobs admitted per model worker (running or waiting); when every ready worker has this many, "
        "requests get 429 with Retry-After.")
    max_queued_seconds: float = setting(
        60.0, "Seconds a new request may be estimated to wait before its synthesis starts (each model worker "
        "estimates it from the chunks ahead of a newcomer and its measured speed; see docs/api.md); when every "
        "ready worker is above it, requests get 429 with a Retry-After computed from the estimate. Never more "
        "than CHATTERBOX_QUEUE_TIMEOUT. 0: no limit but CHATTERBOX_MAX_QUEUED_JOBS.")
    queue_timeout: float = setting(
        300.0, "Seconds a request may wait for its first audio (its turn behind other jobs, then its first "
        "chunk), whether or not the model worker is making progress; then it fails with 504. After the first "
        "audio only CHATTERBOX_CHUNK_TIMEOUT applies. 0: no limit.")
    chunk_timeout: float = setting(
        120.0, "Seconds a model worker may go without a heartbeat (it beats after every engine step and every "
        "second when idle) before it counts as hung: its requests fail with 504 and the supervisor kills "
        "(SIGKILL) and replaces it. A stream waits as long as its worker keeps beating, however many jobs "
        "take turns. Must exceed the longest engine step (Chatterbox on CPU: tens of seconds). 0: never.")
    max_engine_failures: int = setting(
        3, "Engine failures in a row after which a model worker exits to be replaced with a fresh engine: "
        "engine steps whose requests failed with an unexpected exception (e.g. a sticky CUDA error; the rows "
        "of one failed batch count once, bad requests not at all) and made no audio. Audio ends the streak. "
        "0: never.")
    max_json_bytes: int = setting(
        2 * 1024 * 1024, "Largest JSON request body on any route; above: 413 before it is parsed. Bodies over 64 KiB "
        "are parsed off the event loop (a 2 MiB body of small items takes about 60 ms to parse).")
    max_prepared_chars: int = setting(
        16384, "Longest text `/api/v1/tts` (and each `tts` segment of `/api/v1/concat/mixed`) may grow to while "
        "its `sound_words_field` replacements are applied (counted replacement by replacement, so a chain of "
        "replacements stops at the limit); never less than CHATTERBOX_MAX_INPUT_CHARS; above: 413.")
    max_sound_words: int = setting(
        200, "Most `sound_words_field` entries (replacements and removals) in one text: each is a pass over the "
        "text; above: 413.")
    max_takes: int = setting(
        5000, "Most candidate takes (synthesis jobs, each heard by Whisper) one request may need in the worst case: "
        "chunks x num_candidates_per_chunk x max_attempts_per_candidate (one attempt with bypass_whisper_checking), "
        "summed over the `tts` segments of `/api/v1/concat/mixed`; above: 413 before any synthesis. The default "
        "admits any text of 4,096 characters with the default 3 candidates x 3 attempts (at most 512 chunks).")
    max_synthesis_chars: int = setting(
        40960, "Most characters one request may have synthesized in the worst case: the prepared text's characters "
        "x num_candidates_per_chunk x max_attempts_per_candidate (as for CHATTERBOX_MAX_TAKES), summed over the "
        "`tts` segments of `/api/v1/concat/mixed`; above: 413 before any synthesis. The default admits 4,096 "
        "characters with 10 candidates x 1 attempt or 3 x 3, and 409 characters with 10 x 10.")
    max_concat_items: int = setting(
        1000, "Most entries (files and silences) in one `/api/v1/concat` request; above: 413.")
    max_concat_seconds: float = setting(
        3600.0, "Longest output of `/api/v1/concat` and `/concat/mixed`: silences and pauses are counted before "
        "any file is read, clips as each is decoded; above: 413.")
    max_concat_bytes: int = setting(
        1024 ** 3, "Most bytes of audio files one `/api/v1/concat` or `/concat/mixed` request reads and decodes "
        "(server files and uploads together), counted before any is decoded; above: 413.")
    max_whole_file_seconds: float = setting(
        300.0, "Longest a whole-file answer (`/v1/audio/speech` without streaming, `/api/v1/tts`, "
        "`/api/v1/concat/mixed`, `/api/v1/vc`) may be estimated to take before its first byte: its worst-case "
        "synthesis (every round of candidates) at the speed the model workers measured, plus the queue; before "
        "any is measured, a conservative speed per character (docs/api.md). Kept under the proxy's read "
        "timeout (nginx's 360 s); above: 413 pointing to streaming or a long job, before any work. 0: no limit.")
    max_vc_seconds: float = setting(
        600.0, "Longest input audio `/api/v1/vc` converts and `/api/v1/vc_input` stores: an input is decoded only "
        "up to just past it (its bytes first held to CHATTERBOX_MAX_UPLOAD_BYTES); above: 413 naming the field "
        "(`input_audio`, `input_audio_source`, `vc_input_file`), before any conversion.")
    data_dir: str = setting("data", "Directory for voices and generated files.")
    max_upload_bytes: int = setting(
        20 * 1024 * 1024, "Largest uploaded audio file (voice_file, library voices, input_audio); above: 413.")
    output_retention_seconds: int = setting(
        86400, "Generated files in DATA_DIR/outputs older than this many seconds are deleted; 0: no age limit.")
    output_max_bytes: int = setting(
        1024 ** 3, "Largest total size of DATA_DIR/outputs; above it the oldest files are deleted first; "
        "0: no size limit.")
    housekeeping_interval: float = setting(
        600.0, "Seconds between two sweeps, in every front worker, of stale temporary uploads in DATA_DIR/tmp and "
        "of outputs past their retention; 0: only the sweep at start.")
    default_voice: str = setting(
        "", "Library voice used when a request names none (or `default`); empty: the engine's built-in voice.")
    voice_aliases: str = setting(
        "", "Extra voice names, `alias=voice` pairs separated by commas (e.g. `alloy=narrator`). OpenAI "
        "voice names not listed here map to the default voice.")
    url_fetch_allow_private: bool = setting(
        False, "Let `/api/v1/vc` fetch URLs on private, loopback and link-local addresses (a server on "
        "your own network); off: such URLs get 400.")
    url_fetch_max_bytes: int = setting(
        20 * 1024 * 1024, "Largest file `/api/v1/vc` downloads from a URL; above: 413.")
    url_fetch_timeout: float = setting(
        30.0, "Seconds a URL download for `/api/v1/vc` may take in all: connecting, redirects, headers and "
        "body, however slowly the server sends; past it the request gets 400 `url_timeout`.")
    run_dir: str = setting(
        "", "Directory for the model workers' sockets and state; empty: a private temporary directory.")
    log_level: str = setting("info", "Log level of every process.", LOG_LEVELS)
    trust_proxy: int = setting(
        0, "Number of reverse proxies in front (nginx: 1); their X-Forwarded-* headers are trusted.")
    trust_proxy_prefix: bool = setting(
        False, "With CHATTERBOX_TRUST_PROXY, also trust X-Forwarded-Prefix (the path the server is mounted "
        "under, for the URLs it builds); on only when your proxy sets it, as the shipped nginx sites can.")
    api_key: str = setting(
        "", "When set, every request but /health must send `Authorization: Bearer <key>` (the OpenAI SDK's "
        "api_key) or `X-API-Key: <key>`; others get 401. Empty: no authentication.")
    api_keys_file: str = setting(
        "", "A file of named API keys, one `name:key` a line (`python -m chatterbox_server.security.keys create "
        "NAME --file PATH` adds one); each key works like CHATTERBOX_API_KEY. A named file that is missing or "
        "holds no key stops the server from starting.")
    max_streams_per_key: int = setting(
        0, "Synthesis requests one API key (or, without keys, one client address) may run at a time; more get "
        "429 like OpenAI's rate limit. 0: no limit.")
    allowed_hosts: str = setting(
        "", "Host names the server answers to, separated by commas (`.example.com` for a domain and its "
        "subdomains, `*` for any); other Host headers get 403 (DNS rebinding). Empty: `localhost`, `127.0.0.1` "
        "and `::1` when every bind address is loopback and CHATTERBOX_TRUST_PROXY is 0; otherwise any with API "
        "keys, and without keys those names, any IP address, the names in CHATTERBOX_BIND and, for a 0.0.0.0 "
        "or :: bind, this machine's host name.")
    cors_origins: str = setting(
        "", "Browser origins allowed to call the API, separated by commas (`*` for any); empty: no CORS headers.")
    graceful_timeout: int = setting(
        120, "Seconds gunicorn gives running streams to finish on stop or reload.")
    parked_timeout: float = setting(
        120.0, "Seconds a streaming job may stay parked (its client reads no audio, so it is out of credit) "
        "before the model worker cancels it and the stream ends with an error. A parked job does not count "
        "against CHATTERBOX_MAX_QUEUED_JOBS, but a model worker keeps at most that many parked (the longest "
        "parked goes first). A front worker that takes no data from a model worker for this long loses its "
        "jobs too.")
    whisper_model_dir: str = setting(
        "", "Directory of local faster-whisper (CTranslate2) models for the `/api/v1/tts` candidate check: "
        "`<dir>/<whisper_model_name>`, or one model (`<dir>/model.bin`) for every name; empty: the Hugging "
        "Face hub by name (`medium` downloads on first use).")
    whisper_device: str = setting(
        "auto", "Where the speech-recognition process runs Whisper: `auto` (CUDA when present), `cpu`, `cuda`.",
        WHISPER_DEVICES)
    whisper_concurrency: int = setting(
        0, "Transcriptions the speech-recognition process runs at once, for different requests (the model gets "
        "as many CTranslate2 workers; each costs memory). 0: 4 on CUDA, 2 on CPU (at most the cores).")
    whisper_wait_seconds: float = setting(
        10.0, "Longest a `/api/v1/tts` take waits for Whisper when every slot (CHATTERBOX_WHISPER_CONCURRENCY) is "
        "busy with other requests; then that request's check is off, as when Whisper is unavailable (one unchecked "
        "take per chunk from there, header `X-Chatterbox-Degraded: whisper`), so no client's many takes hold "
        "another's request.")
    allow_disable_watermark: bool = setting(
        False, "Honour `disable_watermark` on `/api/v1` (Chatterbox's Perth watermark); off: every file keeps "
        "its watermark and a request that asks otherwise is told so in `X-Chatterbox-Watermark`.")
    database_url: str = setting(
        "", "Database for long-text jobs and request history: empty for SQLite in DATA_DIR/chatterbox.db "
        "(one box, any number of processes; not on NFS), or `postgresql://user:pass@host/db` for several boxes.")
    database_connect_timeout: float = setting(
        5.0, "Seconds to open a PostgreSQL connection before the request that needs it gets 503 "
        "(whole seconds, at least 2). Speech never waits on the database.")
    database_timeout: float = setting(
        10.0, "Seconds one database operation (connect, migrate, query) may take before it is abandoned "
        "and its request gets 503; a hung database costs each request that needs it at most this long.")
    longtext_max_chars: int = setting(
        200_000, "Longest `input` accepted by `/v1/audio/speech/long` (above: 400), and the most characters one "
        "long-text job may have synthesized: its chunks' characters, each chunk made once; a retry is checked "
        "again against the limits then in force (above: 413).")
    longtext_max_chunks: int = setting(
        10_000, "Most chunks one long-text job may be split into (each a database row, a file and a model-worker "
        "job), counted before the job is created and again on a retry; above: 413 naming `streaming_chunk_size`. "
        "The default admits any text of CHATTERBOX_LONGTEXT_MAX_CHARS at any chunk size (the most measured: "
        "7,693 chunks at the smallest, 50).")
    longtext_max_running: int = setting(
        1, "Long-text jobs synthesizing at once, across every front worker and instance on the database.")
    longtext_max_active: int = setting(
        100, "Long-text jobs pending, running or paused at once; above it new jobs get 429.")
    longtext_max_active_per_key: int = setting(
        20, "Long-text jobs one API key may have pending, running or paused at once (with keys; an admin key "
        "too); above it its new jobs get 429. 0: only CHATTERBOX_LONGTEXT_MAX_ACTIVE applies.")
    disk_quota_per_key_bytes: int = setting(
        0, "Bytes of outputs, VC inputs, voices and long-text job audio one API key's workspace may hold (with keys; "
        "admin keys are not held to it). A write past it gets 507 naming this setting, checked before any synthesis: "
        "an upload by its size, a generation or a new long job once the workspace is full. 0: no quota.")
    longtext_retention_seconds: int = setting(
        7 * 86400, "Finished (completed, failed, cancelled) long-text jobs and their audio are deleted this many "
        "seconds after they ended; 0: kept until deleted.")
    longtext_lease_seconds: float = setting(
        30.0, "A running long-text job's lease; a job whose runner died moves to another after this long "
        "(at once when the dead runner was on the same host).")
    longtext_max_sse: int = setting(
        50, "Long-job progress streams (`.../sse`) open at once per front worker; above it 429. Each reads "
        "its job's row once a second.")
    history_max_records: int = setting(1000, "Requests kept in `/v1/status/history` (statistics count all).")
    realtime_max_contexts: int = setting(
        8, "Contexts (turns) one WebSocket may hold open at once (`/v1/audio/speech/realtime` and the vendor "
        "sockets). Opening one more closes the oldest idle context (never the socket); with none idle, the "
        "new one is refused with an error event.")
    realtime_max_message_bytes: int = setting(
        65_536, "Largest WebSocket message a client may send; a larger one gets an error event (and one over "
        "16 times this closes the socket with code 1009, unread).")
    realtime_max_context_chars: int = setting(
        100_000, "Text one WebSocket context may receive in all; more gets an error event for that context.")
    realtime_idle_timeout: float = setting(
        60.0, "Seconds a WebSocket may send nothing while no audio is being made for it before the server "
        "closes it (code 1000). The ElevenLabs socket uses its own `inactivity_timeout` (default 20, at most "
        "180), as there.")
    realtime_ping_interval: float = setting(
        20.0, "Seconds between the server's WebSocket pings; a client that has not answered the last one is "
        "closed (1008). 0: no pings.")
    realtime_lookahead_seconds: float = setting(
        8.0, "How much audio of a context synthesis may run ahead of real-time playback (counted from the "
        "context's first audio): the next segment starts only when the listener has less than this buffered, "
        "so a barge-in wastes at most about this much synthesis.")
    dialogue_max_turns: int = setting(
        200, "Most turns one dialogue request may have (`/v1/audio/dialogue`, `/v1/text-to-dialogue`, inline "
        "speakers in any text field); long-text jobs allow 20 times as many.")
    dialogue_lookahead_turns: int = setting(
        4, "Turns of one dialogue synthesized at once (rows of one batch where the engine batches); the "
        "first turn starts alone, so its first audio comes as early as a single request's.")
    dialogue_gap_ms: int = setting(
        300, "Default silence between the turns of a dialogue, in milliseconds (a request's `gap_ms` "
        "overrides it).")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(PREFIX + f.name.upper())
            if raw is not None and raw.strip() != "":
                values[f.name] = _parse(f, raw.strip())
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise SettingsError(f"{env_name(f.name)}={value!r}: choose one of {', '.join(choices)}")
        for name in ("max_batch", "model_workers", "front_workers", "worker_connections", "max_input_chars",
                     "max_stream_input_chars", "max_queued_jobs", "max_new_tokens", "max_upload_bytes",
                     "url_fetch_max_bytes", "longtext_max_chars", "longtext_max_running", "longtext_max_active",
                     "longtext_max_sse", "history_max_records", "max_json_bytes", "max_prepared_chars",
                     "max_sound_words", "max_takes", "max_synthesis_chars", "max_concat_items", "max_concat_bytes",
                     "longtext_max_chunks", "realtime_max_contexts", "realtime_max_message_bytes",
                     "realtime_max_context_chars"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{env_name(name)} must be at least 1")
        for name in ("stream_tokens", "output_retention_seconds", "output_max_bytes", "queue_timeout",
                     "chunk_timeout", "trust_proxy", "graceful_timeout", "url_fetch_timeout", "max_streams_per_key",
                     "housekeeping_interval", "longtext_retention_seconds", "max_engine_failures",
                     "longtext_max_active_per_key", "disk_quota_per_key_bytes", "whisper_concurrency"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{env_name(name)} cannot be negative")
        if self.parked_timeout <= 0:
            raise SettingsError(f"{env_name('parked_timeout')} must be more than 0")
        for name in ("max_concat_seconds", "max_vc_seconds"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{env_name(name)} must be more than 0")
        for name in ("dialogue_max_turns", "dialogue_lookahead_turns"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{env_name(name)} must be at least 1")
        if not 0 <= self.dialogue_gap_ms <= 5000:
            raise SettingsError(f"{env_name('dialogue_gap_ms')} must be between 0 and 5000")
        for name in ("realtime_idle_timeout", "realtime_lookahead_seconds"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{env_name(name)} must be more than 0")
        if self.realtime_ping_interval < 0:
            raise SettingsError(f"{env_name('realtime_ping_interval')} cannot be negative")
        if self.max_whole_file_seconds < 0:
            raise SettingsError(f"{env_name('max_whole_file_seconds')} cannot be negative")
        if self.whisper_wait_seconds < 0:
            raise SettingsError(f"{env_name('whisper_wait_seconds')} cannot be negative")
        if self.max_queued_seconds < 0:
            raise SettingsError(f"{env_name('max_queued_seconds')} cannot be negative")
        for name in ("database_connect_timeout", "database_timeout"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{env_name(name)} must be more than 0")
        if self.longtext_lease_seconds < 1:
            raise SettingsError(f"{env_name('longtext_lease_seconds')} must be at least 1")
        if not self.bind_addresses:
            raise SettingsError(f"{env_name('bind')} names no address")
        if self.idle_unload_seconds < 0:
            raise SettingsError(f"{env_name('idle_unload_seconds')} cannot be negative")
        specs = self.model_specs        # raises for a malformed CHATTERBOX_MODELS
        served = {spec.name for spec in specs}
        for name in self.preload_names:
            if name not in served:
                raise SettingsError(f"{env_name('preload')} names {name!r}, which is not served "
                                    f"(CHATTERBOX_MODELS: {', '.join(sorted(served))})")
        _ = self.memory_budget_bytes
        for alias, target in self.openai_model_pairs.items():
            if target not in CHATTERBOX_MODELS:
                raise SettingsError(f"{env_name('openai_model_map')}: {alias}={target}: choose one of "
                                    f"{', '.join(CHATTERBOX_MODELS)}")

    @property
    def model_specs(self) -> tuple[ModelSpec, ...]:
        """The models this server serves, the default first: one group of model workers each."""
        if self.engine == "hibari":
            return (ModelSpec("hibari", self.model_workers, ("cpu",)),)
        default_devices = ("cpu",) if self.engine == "tone" else _devices(self.device)
        specs: list[ModelSpec] = []
        for entry in (self.models or self.model).split(","):
            if not entry.strip():
                continue
            spec = _model_spec(entry.strip(), self.model_workers, default_devices)
            if any(spec.name == other.name for other in specs):
                raise SettingsError(f"{env_name('models')} names {spec.name!r} twice")
            specs.append(spec)
        if not specs:
            raise SettingsError(f"{env_name('models')} names no model")
        return tuple(specs)

    @property
    def slot_models(self) -> tuple[tuple[str, str], ...]:
        """(model, device) of each model-worker slot, in slot order: the pool's table for everyone."""
        return tuple((spec.name, device) for spec in self.model_specs for device in spec.slots)

    @property
    def preload_names(self) -> tuple[str, ...]:
        names = [spec.name for spec in self.model_specs]
        wanted = self.preload.strip().lower()
        if wanted == "all":
            return tuple(names)
        if wanted == "none":
            return ()
        if wanted == "default":
            return (names[0],)
        listed = tuple(part.strip() for part in wanted.split(",") if part.strip())
        return ("hibari",) if self.engine == "hibari" and listed else listed

    @property
    def memory_budget_bytes(self) -> int | None:
        return parse_bytes(self.gpu_memory_budget, env_name("gpu_memory_budget"))

    @property
    def openai_model_pairs(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.openai_model_map.split(",") if "=" in item)
        return {alias.strip().lower(): model.strip().lower() for alias, model in pairs
                if alias.strip() and model.strip()}

    @property
    def voice_alias_map(self) -> dict[str, str]:
        pairs = (item.split("=", 1) for item in self.voice_aliases.split(",") if "=" in item)
        return {alias.strip(): voice.strip() for alias, voice in pairs if alias.strip() and voice.strip()}

    @property
    def bind_addresses(self) -> list[str]:
        return [part for part in self.bind.replace(",", " ").split() if part]

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in another process."""
        return {env_name(f.name): str(getattr(self, f.name)) for f in dataclasses.fields(self)}


class SettingsError(ValueError):
    """A CHATTERBOX_* variable holds a value the server cannot use."""


@dataclass(frozen=True)
class ModelSpec:
    """One served model: its name (`standard`, `turbo`, `multilingual`; `hibari`) and its workers."""
    name: str
    workers_per_device: int
    devices: tuple[str, ...]

    @property
    def slots(self) -> tuple[str, ...]:
        """The device of each of its model workers."""
        return tuple(device for device in self.devices for _ in range(self.workers_per_device))


def _devices(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.replace("+", ",").split(",") if part.strip()) or ("auto",)


def _model_spec(entry: str, default_workers: int, default_devices: tuple[str, ...]) -> ModelSpec:
    """`name[:workers][@device[+device...]]`."""
    head, _, device_text = entry.partition("@")
    name, _, workers_text = head.partition(":")
    name = name.strip().lower()
    if name not in CHATTERBOX_MODELS:
        raise SettingsError(f"{env_name('models')}: {name!r} is no model; choose among {', '.join(CHATTERBOX_MODELS)}")
    try:
        workers = int(workers_text) if workers_text.strip() else default_workers
    except ValueError:
        raise SettingsError(f"{env_name('models')}: {entry!r}: the workers after ':' must be a number") from None
    if workers < 1:
        raise SettingsError(f"{env_name('models')}: {entry!r}: at least 1 worker")
    devices = _devices(device_text) if device_text.strip() else default_devices
    return ModelSpec(name, workers, devices)


_BYTE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str, name: str) -> int | None:
    """`20GB`, `12000MB`, `1.5GiB`, a plain byte count; empty: None."""
    text = text.strip().lower().replace(" ", "")
    if not text:
        return None
    number = text.rstrip("kmgtib")
    unit = text[len(number):]
    try:
        value = float(number) * _BYTE_UNITS[unit]
    except (ValueError, KeyError):
        raise SettingsError(f"{name}={text!r}: give a size such as 20GB or 12000MB") from None
    if value <= 0:
        raise SettingsError(f"{name} must be more than 0")
    return int(value)


def env_name(field_name: str) -> str:
    return PREFIX + field_name.upper()


def _parse(f: dataclasses.Field, raw: str) -> Any:
    kind = type(f.default)
    try:
        if kind is bool:
            return raw.lower() in ("1", "true", "yes", "on")
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError:
        raise SettingsError(f"{env_name(f.name)}={raw!r} is not a valid {kind.__name__}") from None
    return raw


def markdown_table() -> str:
    """The settings table of the README, generated so it cannot drift from the code."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for f in dataclasses.fields(Settings):
        default = f"`{f.default}`" if f.default != "" else "(empty)"
        rows.append(f"| `{env_name(f.name)}` | {default} | {f.metadata['doc']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
