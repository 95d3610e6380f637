"""The bracket tags an engine speaks, as EngineInfo.tags lists them (names without the brackets).

Chatterbox Turbo's tokenizer has each of its tags as one added token (``[laugh]``, ``[clear throat]``):
the model was trained to perform them, so a text keeps them as written. Sounds first, then the
delivery (how the words around the tag are spoken). Standard library only: front workers read it.
"""
from __future__ import annotations

TURBO_SOUND_TAGS: tuple[str, ...] = (
    "laugh", "chuckle", "gasp", "cough", "sigh", "groan", "sniff", "shush", "clear throat",
)
TURBO_DELIVERY_TAGS: tuple[str, ...] = (
    "whispering", "angry", "fear", "surprised", "crying", "happy", "sarcastic", "dramatic", "narration",
    "advertisement",
)
TURBO_TAGS: tuple[str, ...] = TURBO_SOUND_TAGS + TURBO_DELIVERY_TAGS
