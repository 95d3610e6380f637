"""A long job's script: its chunks and, for each, the voice, the speed and the silence after it.

A job of plain text is its chunks alone (rules.plan_job), as it always was. A text with inline
speakers (text/speakers.py) or markup (text/markup.py: pauses, SSML, expressive tags) is planned
here, all of it when the job is created, so that a bad script is a 400 that names the turn and the
character before anything is stored or synthesized: every turn's voice resolved from the speakers
table, every turn's markup read, with `gap` seconds of silence between turns (the dialogue gap).

What the job needs besides its chunk texts (which the chunk rows hold) is kept in the job's
`parameters` JSON under "script" (`Script.to_json`), so the database schema is unchanged; a job
without it is a plain job. A speed is stored as markup's rate, not as the speed it gives, so a retry
with another `speed` scales it.

The runner submits one speech job per *span* of chunks (`Script.span`): a run of chunks of one
voice, cut where a dialogue's turn ends with no silence after it, so that the model worker cuts the
engine's own edge silence exactly where the script has a pause or a turn boundary, whichever span a
chunk falls in. The silences themselves are exact zero samples that the model worker adds
(SpeechJob.lead_pause, pauses_after). A job resumed in the middle of a span starts one chunk early
when the chunk it resumes at would otherwise be trimmed differently (that chunk's predecessor is
synthesized again and thrown away), so a resumed job's file is the same file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatterbox_server.errors import ApiError
from chatterbox_server.settings import env_name
from chatterbox_server.synthesis.budget import Ledger, Limits
from chatterbox_server.synthesis.requests import SPEED_RANGE
from chatterbox_server.text.markup import MarkupError, parse_markup, plan_chunks
from chatterbox_server.text.prep import (  # noqa: F401 - needs_script: the view asks it here
    describe_turn,
    hide_double_brackets,
    needs_script,
    show_double_brackets,
)
from chatterbox_server.text.speakers import SpeakerError, Turn, resolve_turns, split_speakers

TURNS_PER_DIALOGUE_LIMIT = 20       # a long job takes 20 times CHATTERBOX_DIALOGUE_MAX_TURNS
DEFAULT_VOICE = "default"           # text before the first speaker marker, when the job names no voice


@dataclass(frozen=True)
class Script:
    """A job's chunks with what each needs; the empty tuples mean "the job's own" (its voice, rate 1,
    no silence), so a plain job is `Script(chunks)`."""
    chunks: tuple[str, ...]
    voices: tuple[str, ...] = ()            # the distinct voice names, in order of first use
    chunk_voices: tuple[int, ...] = ()      # per chunk: an index into `voices`
    turns: tuple[int, ...] = ()             # per chunk: its turn of the script (0-based)
    rates: tuple[float, ...] = ()           # per chunk: markup's rate (prosody), multiplying the job's speed
    pauses: tuple[float, ...] = ()          # per chunk: seconds of silence after it (pauses and gaps)
    lead: float = 0.0                       # seconds of silence before the first chunk
    trim_edges: bool = False                # a dialogue: every turn loses the engine's own edge silence
    dropped_tags: tuple[str, ...] = ()      # expressive tags the engine does not render, removed
    turn_count: int = 1                     # turns of the script (a turn may make no chunk: a pause alone)
    scripted: bool = False                  # planned by plan_script (its chunks are not plain chunking's)
    # where each voice is first used ("turn 3 (speaker "S2")"), for the creation's error messages
    first_use: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    # -- per chunk --------------------------------------------------------------------------------
    def voice_index(self, index: int) -> int:
        return self.chunk_voices[index] if self.chunk_voices else 0

    def voice_of(self, index: int, job_voice: str | None) -> str | None:
        return self.voices[self.voice_index(index)] if self.voices else job_voice

    def turn_of(self, index: int) -> int:
        return self.turns[index] if self.turns else 0

    def pause_after(self, index: int) -> float:
        return self.pauses[index] if self.pauses else 0.0

    def speeds(self, speed: float) -> tuple[float, ...]:
        """Every chunk's speed for the job's `speed` (empty: `speed` itself for all), within SPEED_RANGE."""
        if not self.rates:
            return ()
        return tuple(min(max(speed * rate, SPEED_RANGE[0]), SPEED_RANGE[1]) for rate in self.rates)

    # -- the runner's speech jobs -----------------------------------------------------------------
    def span(self, start: int) -> tuple[int, int]:
        """[begin, end) of the speech job that makes chunk `start` on: begin is `start`, or `start - 1`
        where a job beginning at `start` would trim its first chunk otherwise than the script does
        (chunk begin's audio is then made again and thrown away); end is the first chunk of another
        voice, or of another turn with no silence before it, or the end."""
        count = len(self.chunks)
        begin = start
        if 0 < start < count and self._trimmed_at_start(start) != self.trim_edges:
            begin = start - 1
        end = begin + 1
        while end < count and not self._cut_before(end):
            end += 1
        return begin, end

    def _trimmed_at_start(self, index: int) -> bool:
        """Whether the script wants chunk `index` (> 0) to lose the engine's lead-in silence."""
        return self.pause_after(index - 1) > 0 or (self.trim_edges and self.turn_of(index) != self.turn_of(index - 1))

    def _cut_before(self, index: int) -> bool:
        if self.voice_index(index) != self.voice_index(index - 1):
            return True
        return self.trim_edges and self.turn_of(index) != self.turn_of(index - 1) and self.pause_after(index - 1) == 0

    # -- storage ----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any] | None:
        """What the job's parameters keep under "script"; None for a plain job (which keeps nothing)."""
        if not self.scripted:
            return None
        data: dict[str, Any] = {"trim_edges": self.trim_edges}
        for name in ("voices", "chunk_voices", "turns", "rates", "pauses", "dropped_tags"):
            value = getattr(self, name)
            if value:
                data[name] = list(value)
        if self.lead:
            data["lead"] = self.lead
        if self.turn_count != 1:
            data["turn_count"] = self.turn_count
        return data

    @classmethod
    def from_params(cls, params: dict[str, Any], chunks: list[str] | tuple[str, ...]) -> Script:
        data = params.get("script")
        if not data:
            return cls(tuple(chunks))
        script = cls(tuple(chunks), voices=tuple(data.get("voices", ())),
                     chunk_voices=tuple(data.get("chunk_voices", ())), turns=tuple(data.get("turns", ())),
                     rates=tuple(data.get("rates", ())), pauses=tuple(data.get("pauses", ())),
                     lead=float(data.get("lead", 0.0)), trim_edges=bool(data.get("trim_edges")),
                     dropped_tags=tuple(data.get("dropped_tags", ())), turn_count=int(data.get("turn_count", 1)),
                     scripted=True)
        for name in ("chunk_voices", "turns", "rates", "pauses"):
            if getattr(script, name) and len(getattr(script, name)) != len(chunks):
                raise ValueError(f"the job's script has {len(getattr(script, name))} {name} for {len(chunks)} chunks")
        return script


# -- planning -------------------------------------------------------------------------------------
def plan_script(text: str, *, strategy: str, chunk_size: int, tags: frozenset[str], speakers: dict[str, str] | None,
                default_voice: str | None, gap: float, max_turns: int, limits: Limits,
                what: str = "input") -> Script:
    """The script of a text with inline speakers or markup, its cost checked (a 413 naming the limit).
    Raises ApiError 400 for a marker, a speaker or markup it cannot use, naming the turn and the
    character of the input. The voices are named, not resolved: the caller resolves
    `script.voices` (its `first_use` says where each is first used)."""
    text = hide_double_brackets(text)
    try:
        turns = split_speakers(text)
    except SpeakerError as exc:
        raise ApiError(400, f"input: {exc}", param="input") from exc
    dialogue = turns is not None
    if turns is None:           # markup alone: one turn, read as /v1/audio/speech reads it
        turns = [Turn(None, None, text, 0)]
    if len(turns) > max_turns:
        raise ApiError(400, f"input: {len(turns)} turns; at most {max_turns} in one long-text job "
                            f"({TURNS_PER_DIALOGUE_LIMIT} x {env_name('dialogue_max_turns')})", param="input")
    voiced = _voices(turns, speakers, default_voice or DEFAULT_VOICE) if dialogue else None
    names: dict[str, int] = {}
    first_use: dict[str, str] = {}
    chunks: list[str] = []
    chunk_voices: list[int] = []
    turn_of: list[int] = []
    rates: list[float] = []
    pauses: list[float] = []
    dropped: dict[str, None] = {}
    lead = pending = 0.0
    for number, turn in enumerate(turns):
        if voiced is not None:
            name = voiced[number]
            if name not in names:
                names[name] = len(names)
                first_use[name] = describe_turn(number, turn)
        if number and (chunks or pending or lead):
            pending += gap
        try:
            plan = plan_chunks(parse_markup(turn.text, tags), strategy, chunk_size)
        except MarkupError as exc:
            where = f"{describe_turn(number, turn)}: " if dialogue else ""
            hint = f"; {exc.hint}" if exc.hint else ""
            raise ApiError(400, f"input: {where}{exc.message} at character {turn.text_position + exc.position}"
                                f"{hint}", param="input") from exc
        dropped.update(dict.fromkeys(plan.dropped_tags))
        pending += plan.lead_pause
        for chunk, rate, after in zip(plan.chunks, plan.speeds, plan.pauses_after, strict=True):
            if chunks:
                pauses[-1] += pending
            else:
                lead += pending
            chunks.append(show_double_brackets(chunk))
            chunk_voices.append(names[voiced[number]] if voiced is not None else 0)
            turn_of.append(number)
            rates.append(rate)
            pauses.append(0.0)
            pending = after
    if not chunks:
        tags_note = f" (dropped: {', '.join(f'[{tag}]' for tag in dropped)})" if dropped else ""
        raise ApiError(400, "input: there is nothing to speak once its pauses, speaker markers and the tags this "
                            f"engine does not understand are taken out{tags_note}", param="input")
    pauses[-1] += pending
    ledger = Ledger(limits)
    ledger.add_long_text(chunks, chunk_size, what)
    return Script(tuple(chunks), voices=tuple(names) if dialogue else (),
                  chunk_voices=tuple(chunk_voices) if dialogue else (), turns=tuple(turn_of) if dialogue else (),
                  rates=tuple(rates) if any(rate != 1.0 for rate in rates) else (),
                  pauses=tuple(pauses) if any(pauses) else (), lead=lead, trim_edges=dialogue,
                  dropped_tags=tuple(dropped), turn_count=len(turns), scripted=True,
                  first_use=first_use)


def check_stored(chunks: list[str], chunk_size: int, limits: Limits, what: str) -> list[str]:
    """A retry of a scripted job: its stored chunks against the limits in force now (a 413)."""
    Ledger(limits).add_long_text(chunks, chunk_size, what)
    return chunks


def _voices(turns: list[Turn], speakers: dict[str, str] | None, default_voice: str) -> list[str]:
    """Each turn's voice name; a label the table lacks is a 400 that names its turn."""
    try:
        return [voice for voice, _ in resolve_turns(turns, speakers or {}, default_voice)]
    except SpeakerError as exc:
        number = next((n for n, turn in enumerate(turns) if turn.position == exc.position), None)
        where = f"turn {number}: " if number is not None else ""
        raise ApiError(400, f"input: {where}{exc}; give every label a voice in \"speakers\", e.g. "
                            '{"speakers": {"S1": "alice", "S2": "bob"}}', param="speakers") from exc
