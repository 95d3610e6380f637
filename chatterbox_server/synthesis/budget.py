"""A request's worst-case cost, checked against the limits declared in settings.py (CHATTERBOX_MAX_*).

What a request costs is counted in the units that bound its work:

- characters after text preparation (sound_words_field replacements can multiply them; the rules
  and the growth are bounded while they are applied: text/prep.py's PrepLimits),
- takes: chunks x candidates x attempts, the synthesis jobs a request may need if every check fails
  (and as many Whisper transcriptions),
- seconds of audio out and bytes of audio decoded (concatenation),
- a long-text job's chunks and characters (one take per chunk, no Whisper check), at creation and
  again on a retry,
- seconds of input audio and bytes decoded for voice conversion,
- bytes of JSON parsed.

A `Ledger` holds one request's running total: the views add to it what they learn, before the
work it stands for (every tts segment of a mixed concatenation is planned and counted before the
first is synthesized; silences before any file is read; files' sizes before any is decoded), and
a decoded clip's seconds as soon as they are known. The first limit passed is an ApiError 413 that
names the setting and the field of the request that drives it, so the client knows what to change.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from chatterbox_server.errors import ApiError
from chatterbox_server.settings import Settings, env_name
from chatterbox_server.text.prep import PrepLimits, TextOptions, TextTooLarge, parse_sound_words, plan_chunks
from workers.ipc.board import Speed  # noqa: F401 - what the estimates read; callers name it from here

STATUS = 413
CODE = "over_budget"


@dataclass(frozen=True)
class Limits:
    json_bytes: int
    prepared_chars: int
    sound_words: int
    takes: int
    synthesis_chars: int
    concat_items: int
    concat_seconds: float
    concat_bytes: int
    whole_file_seconds: float = 0.0     # 0: no limit on a whole-file answer's estimated synthesis time
    long_chars: int = 200_000           # a long-text job's characters synthesized (CHATTERBOX_LONGTEXT_MAX_CHARS)
    long_chunks: int = 10_000           # a long-text job's chunks
    convert_seconds: float = 600.0      # seconds of input audio to convert (CHATTERBOX_MAX_VC_SECONDS)
    upload_bytes: int = 20 * 1024 * 1024    # each audio file decoded for voice conversion

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """A text as long as the input limit always fits the prepared-text limit."""
        return cls(settings.max_json_bytes, max(settings.max_prepared_chars, settings.max_input_chars),
                   settings.max_sound_words, settings.max_takes, settings.max_synthesis_chars,
                   settings.max_concat_items,
                   settings.max_concat_seconds, settings.max_concat_bytes, settings.max_whole_file_seconds,
                   settings.longtext_max_chars, settings.longtext_max_chunks, settings.max_vc_seconds,
                   settings.max_upload_bytes)

    @property
    def prep(self) -> PrepLimits:
        return PrepLimits(max_chars=self.prepared_chars, max_rules=self.sound_words)


def over(setting: str, message: str, param: str | None) -> ApiError:
    """The refusal of a request over the limit of `setting` (a Settings field name)."""
    return ApiError(STATUS, f"{message} ({env_name(setting)})", param=param, code=CODE)


def worst_case_takes(chunks: int, candidates: int, attempts: int, bypass_whisper: bool) -> int:
    """Takes of a text if no take passes the Whisper check before the last attempt; without the check
    every candidate is made once (synthesis/checked.CheckedSpeech.speak, synthesis/takes.make_takes)."""
    return chunks * candidates * (1 if bypass_whisper else attempts)


def prepared_chunks(text: str, options: TextOptions, enable_batching: bool, smart_batch: bool, limits: Limits,
                    param: str = "") -> list[str]:
    """plan_chunks within the limits on text preparation; `param` prefixes the field names (a segment)."""
    prefix = f"{param}." if param else ""
    try:
        return plan_chunks(text, options, enable_batching, smart_batch, limits.prep)
    except TextTooLarge as exc:
        if exc.what == "rules":
            raise over("max_sound_words", f"{prefix}sound_words_field has {exc.found} entries, over the limit of "
                                          f"{exc.limit}", f"{prefix}sound_words_field") from None
        raise over("max_prepared_chars", f"{prefix}sound_words_field makes the text longer than the limit of "
                                         f"{exc.limit} characters", f"{prefix}sound_words_field") from None


@dataclass
class Ledger:
    """One request's running cost; each `add_*` refuses the request as soon as a total passes its limit."""
    limits: Limits
    takes: int = 0
    items: int = 0
    seconds: float = 0.0
    decoded_bytes: int = 0
    chars: int = 0
    notes: list[str] = field(default_factory=list)
    texts: list[tuple[int, int, int]] = field(default_factory=list)   # (characters, candidates, rounds)
    convert_seconds: float = 0.0       # seconds of input audio to convert (voice conversion)

    def add_text(self, chunks: list[str], candidates: int, attempts: int, bypass_whisper: bool,
                 param: str = "") -> int:
        """A text's chunks and candidate settings: its worst-case takes join the request's."""
        prefix = f"{param}." if param else ""
        rounds = 1 if bypass_whisper else attempts
        takes = worst_case_takes(len(chunks), candidates, attempts, bypass_whisper)
        chars = sum(len(chunk) for chunk in chunks) * candidates * rounds
        self.takes += takes
        self.chars += chars
        self.texts.append((sum(len(chunk) for chunk in chunks), candidates, rounds))
        field_name = f"{prefix}max_attempts_per_candidate" if rounds > 1 else f"{prefix}num_candidates_per_chunk"
        before = ", with the segments before it" if self.takes != takes else ""
        how = f"{candidates} candidates x {rounds} attempts{before}"
        if self.takes > self.limits.takes:
            raise over("max_takes", f"{prefix}text needs up to {self.takes} takes ({len(chunks)} chunks x {how}), over "
                                    f"the limit of {self.limits.takes}; send a shorter text or fewer candidates or "
                                    "attempts", field_name)
        if self.chars > self.limits.synthesis_chars:
            raise over("max_synthesis_chars", f"{prefix}text needs up to {self.chars} characters synthesized "
                                              f"({chars // (candidates * rounds)} characters x {how}), over the limit "
                                              f"of {self.limits.synthesis_chars}; send a shorter text or fewer "
                                              "candidates or attempts", field_name)
        return takes

    def add_items(self, count: int, param: str) -> None:
        self.items += count
        if self.items > self.limits.concat_items:
            raise over("max_concat_items", f"{param} has {self.items} entries, over the limit of "
                                           f"{self.limits.concat_items}", param)

    def add_seconds(self, seconds: float, param: str) -> None:
        self.seconds += max(0.0, seconds)
        if self.seconds > self.limits.concat_seconds:
            raise over("max_concat_seconds", f"{param}: the output would last over {self.seconds:.1f} s, over the "
                                             f"limit of {self.limits.concat_seconds:g} s", param)

    def add_bytes(self, size: int, param: str) -> None:
        self.decoded_bytes += max(0, size)
        if self.decoded_bytes > self.limits.concat_bytes:
            raise over("max_concat_bytes", f"{param}: the audio files to decode total over {self.decoded_bytes} "
                                           f"bytes, over the limit of {self.limits.concat_bytes}", param)

    # -- long-text jobs ----------------------------------------------------------------------------
    def add_long_text(self, chunks: list[str], chunk_size: int, what: str = "input") -> None:
        """A long-text job's chunks: each is made once (no candidates, no Whisper check), so its takes
        are its chunks and its characters synthesized its prepared characters. `what` names the text
        in the message ("input", or a retried job's text, which was checked when it was created but
        may be over limits lowered since)."""
        chars = sum(len(chunk) for chunk in chunks)
        self.takes += len(chunks)
        self.chars += chars
        self.texts.append((chars, 1, 1))
        self.check_long_chunks(self.takes, chunk_size, what)
        if self.chars > self.limits.long_chars:
            raise over("longtext_max_chars", f"{what} has {chars} characters to synthesize, over the limit of "
                                             f"{self.limits.long_chars}; send a shorter text", "input")

    def check_long_chunks(self, chunks: int, chunk_size: int, what: str = "input", at_least: bool = False) -> None:
        """Refuse `chunks` (or, `at_least`, a lower bound known before the text is cut) over the limit."""
        if chunks > self.limits.long_chunks:
            raise over("longtext_max_chunks", f"{what} makes {'at least ' if at_least else ''}{chunks} chunks at "
                                              f"streaming_chunk_size {chunk_size}, over the limit of "
                                              f"{self.limits.long_chunks}; send a shorter text or a larger "
                                              "streaming_chunk_size", "streaming_chunk_size")

    # -- voice conversion --------------------------------------------------------------------------
    def add_decode(self, size: int, param: str) -> None:
        """An audio file about to be decoded for voice conversion (the input, an uploaded or fetched
        target voice): its bytes join the request's, each file held to CHATTERBOX_MAX_UPLOAD_BYTES
        before any of it is decoded."""
        self.decoded_bytes += max(0, size)
        if size > self.limits.upload_bytes:
            raise over("max_upload_bytes", f"{param} is {size} bytes, over the limit of {self.limits.upload_bytes}",
                       param)

    def convert_room(self) -> float:
        """Seconds of input audio this request may still convert: the decoder stops just past them."""
        return max(0.0, self.limits.convert_seconds - self.convert_seconds)

    def add_convert_seconds(self, seconds: float, param: str) -> None:
        """Seconds of input audio decoded for conversion (a decoder stopped at convert_room() reports
        just past the limit, never the whole file)."""
        self.convert_seconds += max(0.0, seconds)
        if self.convert_seconds > self.limits.convert_seconds:
            raise over("max_vc_seconds", f"{param} lasts longer than the limit of {self.limits.convert_seconds:g} s "
                                         "of audio to convert; send a shorter recording", param)


# -- whole-file answers and the proxy's timeout ----------------------------------------------------
# Seconds of synthesis per character on one batch row while no model worker has measured its own
# speed yet (it does after its first chunk): set well above what each engine does on its device, so
# an estimate errs towards refusing (the client is pointed at streaming, which has no such limit).
FALLBACK_SECONDS_PER_CHAR = {"chatterbox": 0.08, "chatterbox-cpu": 0.5, "hibari": 0.02, "tone": 0.005}
FALLBACK_SECONDS_PER_INPUT_SECOND = {"chatterbox": 1.0, "chatterbox-cpu": 6.0}   # voice conversion


def synthesis_seconds(ledger: Ledger, speed: Speed) -> tuple[float, bool]:
    """(estimated seconds until the whole answer is synthesized, whether the speed was measured).

    Each text is synthesized round after round (attempts), a round's candidates side by side on the
    rows there are; voice conversion at the measured cost per input second; plus the queue ahead."""
    key = speed.fallback_key()
    per_char = speed.per_char if speed.per_char else FALLBACK_SECONDS_PER_CHAR.get(key, 0.08)
    per_second = speed.per_input_second if speed.per_input_second else FALLBACK_SECONDS_PER_INPUT_SECOND.get(key, 1.0)
    rows = max(1, speed.rows)
    serial_chars = sum(chars * rounds * math.ceil(candidates / rows) for chars, candidates, rounds in ledger.texts)
    seconds = serial_chars * per_char
    seconds += ledger.convert_seconds * per_second
    measured = bool(speed.per_char) if ledger.texts else bool(speed.per_input_second)
    return seconds + max(0.0, speed.queued), measured


def check_whole_file(ledger: Ledger, speed: Speed, param: str | None = None) -> float:
    """Refuse a whole-file answer that would not be ready within CHATTERBOX_MAX_WHOLE_FILE_SECONDS
    (kept under the proxy's read timeout, nginx's 360 s): nothing is sent until it is all made."""
    limit = ledger.limits.whole_file_seconds
    seconds, measured = synthesis_seconds(ledger, speed)
    if limit > 0 and seconds > limit:
        how = "at the speed the model workers measured" if measured else "at a conservative speed (none measured yet)"
        raise over("max_whole_file_seconds", f"a whole-file answer would take about {seconds:.0f} s to make {how}, "
                                             f"over the limit of {limit:g} s; use the streaming endpoint "
                                             "(/v1/audio/speech/stream) or a long job (/v1/audio/speech/long), or "
                                             "send a shorter text", param)
    return seconds


def check_stored_sound_words(words: str, max_rules: int, max_chars: int,
                             param: str = "default_parameters.sound_words_field") -> None:
    """A voice's stored sound_words_field, checked when it is stored (every later request with the
    voice would apply it): at most CHATTERBOX_MAX_SOUND_WORDS entries and CHATTERBOX_MAX_INPUT_CHARS
    characters, else a 400 naming the limit."""
    if len(words) > max_chars:
        raise ApiError(400, f"{param}: is {len(words)} characters, over the limit of {max_chars} "
                            f"({env_name('max_input_chars')})", param=param, code="invalid_value")
    rules = len(parse_sound_words(words))
    if rules > max_rules:
        raise ApiError(400, f"{param}: has {rules} entries, over the limit of {max_rules} "
                            f"({env_name('max_sound_words')})", param=param, code="invalid_value")


def json_too_large(size: int | None, limit: int) -> ApiError:
    told = f"is {size} bytes, over" if size is not None else "is larger than"
    return over("max_json_bytes", f"the JSON body {told} the limit of {limit} bytes", None)


def pauses_seconds(clips: int, pause_ms: int, variation_ms: int) -> float:
    """The longest automatic pauses between `clips` adjacent clips (audio/concat.join)."""
    if pause_ms <= 0 or clips < 2:
        return 0.0
    return (clips - 1) * (pause_ms + variation_ms) / 1000
