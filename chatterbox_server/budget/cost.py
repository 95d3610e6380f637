"""A request's worst-case cost, checked against the limits declared in settings.py (CHATTERBOX_MAX_*).

What a request costs is counted in the units that bound its work:

- characters after text preparation (sound_words_field replacements can multiply them; the rules
  and the growth are bounded while they are applied: text/prep.py's PrepLimits),
- takes: chunks x candidates x attempts, the synthesis jobs a request may need if every check fails
  (and as many Whisper transcriptions),
- seconds of audio out and bytes of audio decoded (concatenation),
- bytes of JSON parsed.

A `Ledger` holds one request's running total: the views add to it what they learn, before the
work it stands for (every tts segment of a mixed concatenation is planned and counted before the
first is synthesized; silences before any file is read; files' sizes before any is decoded), and
a decoded clip's seconds as soon as they are known. The first limit passed is an ApiError 413 that
names the setting and the field of the request that drives it, so the client knows what to change.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from chatterbox_server.errors import ApiError
from chatterbox_server.settings import Settings, env_name
from chatterbox_server.text.prep import PrepLimits, TextOptions, TextTooLarge, plan_chunks

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

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        """A text as long as the input limit always fits the prepared-text limit."""
        return cls(settings.max_json_bytes, max(settings.max_prepared_chars, settings.max_input_chars),
                   settings.max_sound_words, settings.max_takes, settings.max_synthesis_chars,
                   settings.max_concat_items,
                   settings.max_concat_seconds, settings.max_concat_bytes)

    @property
    def prep(self) -> PrepLimits:
        return PrepLimits(max_chars=self.prepared_chars, max_rules=self.sound_words)


def over(setting: str, message: str, param: str | None) -> ApiError:
    """The refusal of a request over the limit of `setting` (a Settings field name)."""
    return ApiError(STATUS, f"{message} ({env_name(setting)})", param=param, code=CODE)


def worst_case_takes(chunks: int, candidates: int, attempts: int, bypass_whisper: bool) -> int:
    """Takes of a text if no take passes the Whisper check before the last attempt; without the check
    every candidate is made once (extended_tts.make_speech, asr/select.make_takes)."""
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

    def add_text(self, chunks: list[str], candidates: int, attempts: int, bypass_whisper: bool,
                 param: str = "") -> int:
        """A text's chunks and candidate settings: its worst-case takes join the request's."""
        prefix = f"{param}." if param else ""
        rounds = 1 if bypass_whisper else attempts
        takes = worst_case_takes(len(chunks), candidates, attempts, bypass_whisper)
        chars = sum(len(chunk) for chunk in chunks) * candidates * rounds
        self.takes += takes
        self.chars += chars
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


def json_too_large(size: int | None, limit: int) -> ApiError:
    told = f"is {size} bytes, over" if size is not None else "is larger than"
    return over("max_json_bytes", f"the JSON body {told} the limit of {limit} bytes", None)


def pauses_seconds(clips: int, pause_ms: int, variation_ms: int) -> float:
    """The longest automatic pauses between `clips` adjacent clips (audio/concat.join)."""
    if pause_ms <= 0 or clips < 2:
        return 0.0
    return (clips - 1) * (pause_ms + variation_ms) / 1000
