"""Which served model a request goes to: its `model` field, its `language`, the served models.

Each served model (CHATTERBOX_MODELS) answers to its own names: `chatterbox-turbo`, `turbo` and
the names its engine gives (`tone-turbo`, `hibari`). `chatterbox` means the standard model where
it is served, else the default one; OpenAI's names (`tts-1`, `tts-1-hd`, `gpt-4o-mini-tts`) go
where CHATTERBOX_OPENAI_MODEL_MAP says, or to the default model when that one is not served.
Vendor clients (ElevenLabs' `eleven_*`, Cartesia's `sonic-*`, Deepgram's `aura-*`) send their own
ids: those that name no model of ours go to the default model. A request that does not pick a
model by one of our names, and asks for a language its model cannot speak, goes to a served model
that speaks it (the multilingual one). Pure logic: no I/O.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chatterbox_server.settings import CHATTERBOX_MODELS
from workers.engines.base import EngineInfo

GENERIC_NAME = "chatterbox"


@dataclass(frozen=True)
class Served:
    name: str                     # the CHATTERBOX_MODELS entry: standard, turbo, multilingual; hibari
    info: EngineInfo | None       # None while none of its workers has described it


class UnknownModel(ValueError):
    """The request names a model this server does not serve; the message lists those it does."""


def model_id(name: str) -> str:
    """The id /v1/models lists: `chatterbox-turbo`; the embedded engine's own name for it."""
    return f"chatterbox-{name}" if name in CHATTERBOX_MODELS else name


def names_of(served: Served) -> tuple[str, ...]:
    names = [model_id(served.name), served.name]
    if served.info is not None:
        names += [name for name in served.info.model_names if name != GENERIC_NAME]
    return tuple(dict.fromkeys(names))


def route(requested: str | None, language: str | None, served: Sequence[Served],
          openai_map: Mapping[str, str], *, vendor_ids: bool = False) -> str:
    """The served model's name for this request. `vendor_ids`: a name of no model of ours is a vendor's
    model id, which goes to the default model instead of being refused."""
    if not served:
        raise UnknownModel("no model is configured")
    default = served[0].name
    by_name = {s.name: s for s in served}
    wanted = (requested or "").strip()
    chosen, by_our_name = default, False
    if wanted:
        lowered = wanted.lower()
        named = next((s.name for s in served if lowered in (n.lower() for n in names_of(s))), None)
        if named is not None:
            chosen, by_our_name = named, True
        elif lowered == GENERIC_NAME and any(s.name in CHATTERBOX_MODELS for s in served):
            chosen = "standard" if "standard" in by_name else default
        elif lowered in openai_map:
            chosen = openai_map[lowered] if openai_map[lowered] in by_name else default
        elif not vendor_ids or lowered in _our_names():     # ours but not served here: never the default
            raise UnknownModel(unknown_message(wanted, served))
    if language and language.lower() != "en" and not by_our_name:
        return speaker_of(language, by_name[chosen], served) or chosen
    return chosen


def speaker_of(language: str, chosen: Served, served: Sequence[Served]) -> str | None:
    """A served model that speaks `language`, when the chosen one does not."""
    if chosen.info is None or language in chosen.info.languages:
        return None
    return next((s.name for s in served if s.info is not None and language in s.info.languages), None)


def _our_names() -> set[str]:
    return {model_id(name) for name in CHATTERBOX_MODELS} | set(CHATTERBOX_MODELS)


def unknown_message(wanted: str, served: Sequence[Served]) -> str:
    available = ", ".join(model_id(s.name) for s in served)
    if wanted.lower() in _our_names():
        return (f"model {wanted!r} is not enabled on this server (CHATTERBOX_MODELS); "
                f"the models served here are {available}")
    return f"model {wanted!r} is not served here; the models served here are {available}"
